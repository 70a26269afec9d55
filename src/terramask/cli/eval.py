"""``terramask eval``: measure quality against labels and compare models."""

from __future__ import annotations

import click

from terramask.core.errors import InputError


def _parse_checkpoints(values: tuple[str, ...], models: tuple[str, ...]) -> dict[str, str]:
    """``PATH`` (one model only) or ``MODEL=PATH`` (any number) -> ``{model: path}``."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name in models:
            out[name] = path
        elif len(models) == 1 and not (sep and name in models):
            out[models[0]] = v
        else:
            raise InputError(f"--checkpoint {v!r}: with several models write MODEL=PATH (models: {', '.join(models)})")
    return out


def _parse_params(values: tuple[str, ...]) -> dict:
    """``[MODEL:]KEY=VALUE`` -> dict, values parsed as int, float, bool or left as text."""
    out: dict = {}
    for v in values:
        key, sep, raw = v.partition("=")
        if not sep or not key:
            raise InputError(f"--auto-param {v!r}: write [MODEL:]KEY=VALUE, e.g. points_per_side=64 or sam-vit-b:preset=small-objects")
        low = raw.lower()
        value: object
        if low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        model, colon, name = key.rpartition(":")
        out[f"{model}{colon}{name.replace('-', '_')}"] = value
    return out


@click.command(name="eval")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", "models", multiple=True, required=True, help="Model name (repeat to compare several, e.g. --model classic --model sam-vit-b).")
@click.option("--checkpoint", "checkpoints", multiple=True, help="Local checkpoint: PATH with one model, MODEL=PATH with several.")
@click.option("--mode", type=click.Choice(["clicks", "box", "auto", "find"]), default="clicks", show_default=True, help="Click simulator, tight box prompts, automatic generation, or finding every instance (--text or --exemplars-from-labels).")
@click.option("--text", "find_text", multiple=True, metavar="PHRASE", help="--mode find: the phrase naming --class (text route: --detector finds it).")
@click.option("--exemplars-from-labels", "exemplars_per_image", type=click.IntRange(min=1), default=None, help="--mode find: N labelled objects per image are find-similar's exemplars, the others are to be found.")
@click.option("--similarity", type=click.FloatRange(-1.0, 1.0), default=0.6, show_default=True, help="--mode find with exemplars: cosine similarity a found object must reach.")
@click.option("--detector", default=None, help="--mode find with --text: detector or SAM 3 model name.")
@click.option("--class", "target_class", type=int, default=1, show_default=True, help="Target class value in the class masks (binary sets: 1).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate N images, evenly spaced over the sorted file names.")
@click.option("--instances-per-image", type=click.IntRange(min=1), default=None, help="Sample N objects per image (deterministic, see --seed).")
@click.option("--min-area", type=click.IntRange(min=1), default=16, show_default=True, help="Drop labelled objects smaller than this many pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the object sampling (and of engines with a random generator, e.g. classic's GrabCut).")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat the object sampling with N seeds (--seed, --seed+1, ...); reports mean, std over seeds and 95 % bootstrap intervals.")
@click.option("--max-clicks", type=click.IntRange(1, 1000), default=20, show_default=True, help="Click budget per object.")
@click.option("--stop-iou", type=click.FloatRange(0, 1, min_open=True), default=0.90, show_default=True, help="Stop clicking once this IoU is reached.")
@click.option("--multimask", type=click.Choice(["first", "always", "never"]), default="first", show_default=True, help="When to ask for several candidates (the best-scoring one is kept).")
@click.option("--error-region", "region", type=click.Choice(["deepest", "area"]), default="deepest", show_default=True, help="Which error region gets the next click (deepest = RITM).")
@click.option("--no-prior", is_flag=True, help="Do not pass the previous logits as a prior mask.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Boundary F-score tolerance in pixels.")
@click.option("--auto-param", "auto_params", multiple=True, help="Automatic-generation parameter [MODEL:]KEY=VALUE (repeatable); a MODEL: prefix limits it to that model, e.g. sam-vit-b:preset=small-objects.")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True, help="Best and worst examples drawn per model.")
@click.option("--no-plots", is_flag=True, help="Write metrics and report without PNG plots (no matplotlib needed).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Output directory.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(
    dataset: str,
    models: tuple[str, ...],
    checkpoints: tuple[str, ...],
    mode: str,
    find_text: tuple[str, ...],
    exemplars_per_image: int | None,
    similarity: float,
    detector: str | None,
    target_class: int,
    limit: int | None,
    instances_per_image: int | None,
    min_area: int,
    seed: int,
    n_seeds: int,
    max_clicks: int,
    stop_iou: float,
    multimask: str,
    region: str,
    no_prior: bool,
    tolerance: float,
    auto_params: tuple[str, ...],
    examples: int,
    no_plots: bool,
    out_dir: str,
    quiet: bool,
) -> None:
    """Measure quality on a labelled DATASET folder (images/ + masks/ [+ masks_instance/]).

    Writes metrics.json, a per-image metrics.csv and report.md with PNG plots into --out.
    Several --model values give one comparison table and one curve per model.
    """
    from terramask.eval.datasets import SegmentationDataset
    from terramask.pipelines.evaluate.readers import read_image
    from terramask.pipelines.evaluate.run import EvalConfig, run_evaluation, seeds_from

    ckpts = _parse_checkpoints(checkpoints, models)
    ds = SegmentationDataset(
        dataset, target_class, limit=limit, instances_per_image=instances_per_image, min_area=min_area, seed=seed, read_image=read_image
    )
    config = EvalConfig(
        mode=mode,
        max_clicks=max_clicks,
        stop_iou=stop_iou,
        miou_ks=tuple(k for k in (1, 3, 5) if k <= max_clicks),
        multimask=multimask,
        region=region,
        use_prior=not no_prior,
        boundary_tolerance=tolerance,
        auto_params=_parse_params(auto_params),
        n_examples=examples,
        find_text=find_text,
        exemplars_per_image=exemplars_per_image,
        similarity=similarity,
    )
    def text_loader(name: str, checkpoint: str | None):
        from terramask.cli.find import text_route

        return text_route(name, checkpoint, "cpu", "torch", detector, None, None, None)

    loader = text_loader if find_text else None
    metrics = run_evaluation(
        ds, list(models), config, out_dir, seeds=seeds_from(seed, n_seeds), checkpoints=ckpts, loader=loader,
        progress=False if quiet else None, plots=not no_plots
    )
    from terramask.pipelines.evaluate.report import comparison_table
    from terramask.pipelines.evaluate.spread import spread_table

    summaries = list(metrics["models"].values())
    click.echo(comparison_table(mode, summaries))
    click.echo(spread_table(summaries))
    click.echo(f"wrote {out_dir}/metrics.json, metrics.csv, report.md")
