"""``terramask finetune``: adapt a SAM model to a labelled dataset and measure the gain."""

from __future__ import annotations

import click


@click.command(name="finetune")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", default=None, help="Base model: a SAM/MobileSAM name (sam-vit-b, mobilesam …) or a run directory "
              "(default: as other commands, or the SAM of --checkpoint).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local SAM checkpoint to start from.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Run directory: model.pth, terramask.json, report.md; rerun the same command to resume.")
@click.option("--train", type=click.Choice(["decoder", "decoder+lora"]), default="decoder", show_default=True,
              help="Train the prompt encoder and mask decoder, or also low-rank adapters in the encoder's attention (slow on CPU).")
@click.option("--prompts", type=click.Choice(["clicks", "boxes", "both"]), default="both", show_default=True,
              help="Training prompts: simulated clicks, jittered boxes, or both.")
@click.option("--epochs", type=click.IntRange(1, 10000), default=10, show_default=True, help="Most epochs to train.")
@click.option("--val", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Fraction of images held back for validation, early stopping and the before/after table (0: none).")
@click.option("--class", "target_class", type=int, default=1, show_default=True, help="Class value of the objects to learn.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, the order and the prompts.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="AdamW learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Objects per optimiser step.")
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True,
              help="Stop after this many epochs without a better val mIoU@1.")
@click.option("--instances-per-image", type=click.IntRange(min=1), default=None, help="Use at most N objects per image.")
@click.option("--min-area", type=click.IntRange(min=1), default=16, show_default=True, help="Ignore objects smaller than this many pixels.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use N images, evenly spaced over the sorted names.")
@click.option("--eval-clicks", type=click.IntRange(1, 20), default=5, show_default=True, help="Click budget of the before/after evaluation.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: data-parallel on Ray Train workers (CPU, gradients summed over the workers).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray workers (with --engine ray; default 2).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(dataset: str, model: str | None, checkpoint: str | None, out_dir: str, train: str, prompts: str, epochs: int,
            val: float, target_class: int, seed: int, lr: float, batch_size: int, patience: int,
            instances_per_image: int | None, min_area: int, limit: int | None, eval_clicks: int, device: str, engine: str,
            workers: int | None, quiet: bool) -> None:
    """Fine-tune SAM's mask decoder on a labelled DATASET folder (images/ + masks/, as `terramask eval`).

    The image encoder is frozen and every image embedded once (embedding cache), so an
    epoch costs decoder time only. The best checkpoint on the val split is kept in the
    family's official format; use the run anywhere as --model RUN_DIR. With --engine ray
    the same training runs data-parallel on Ray Train workers (same result as one process
    for the same --seed and --batch-size).
    """
    from terramask.pipelines.finetune.config import FinetuneConfig
    from terramask.pipelines.finetune.report import before_after_table
    from terramask.pipelines.finetune.run import run_finetune

    config = FinetuneConfig(
        dataset=dataset, model=model, checkpoint=checkpoint, train=train, prompts=prompts, epochs=epochs, val=val,
        target_class=target_class, seed=seed, lr=lr, batch_size=batch_size, patience=patience,
        instances_per_image=instances_per_image, min_area=min_area, limit=limit, eval_clicks=eval_clicks, device=device,
        engine=engine, workers=workers,
    )
    info = run_finetune(config, out_dir, progress=False if quiet else None)
    if info["metrics"]["after"] is not None:
        click.echo(before_after_table(info))
    best = info["best"] or {}
    click.echo(f"best epoch {best.get('epoch')} of {info['training']['epochs_done']}; wrote {out_dir}/model.pth, "
               f"terramask.json, report.md (use --model {out_dir})")
