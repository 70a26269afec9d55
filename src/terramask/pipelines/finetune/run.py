"""``run_finetune``: fine-tune a SAM-family model on a labelled dataset, resumably.

1. The dataset is read as ``terramask eval`` reads it and checked before any model loads
   (sizes, target class, objects above the minimum area); images are split into train
   and val with the seed.
2. The base model is loaded with the embedding cache; every training image is embedded
   once (a rerun or a resumed run reads the cache), so an epoch costs decoder time only
   (``decoder``); with ``decoder+lora`` the encoder runs in every step.
3. Before training, the val images are evaluated with the click protocol of
   ``terramask eval`` (``eval_clicks`` clicks).
4. Each epoch draws its order and prompts from ``numpy.random.default_rng([seed,
   epoch])``, steps the trainer on batches, measures val mIoU@1 and keeps the best
   checkpoint (``model.pth``, the family's official format, + ``terramask.json``).
   ``state.pt`` (trainable weights, optimiser, RNG, history) is written atomically after
   every epoch: a run killed at any moment restarts from its last finished epoch with
   the same command and gives the weights an uninterrupted run gives.
5. Early stopping after ``patience`` epochs without a better val mIoU@1; a NaN loss
   stops the run with :class:`ModelError`, the best checkpoint kept.
6. The best checkpoint is evaluated again on the val images (its decoder loaded into the
   trainer, so the cached embeddings serve; with adapters, loaded as ``--model RUN_DIR``);
   ``report.md`` has the loss curve and the before/after table.

7. ``engine="ray"``: the same loop on several Ray Train workers, one model replica
   each (:func:`train_worker`). Every worker draws the same order and prompts, steps on
   its share of each global batch and the gradients are summed over the workers, so
   the run equals the local one for the same seed and batch size (float tolerance);
   worker 0 embeds the images first (the others read the cache), evaluates, and writes
   the run directory, so resuming and the report work as with one worker.

The pipeline holds no torch: the model is reached through
:func:`terramask.models.resolve.load_backend` / :func:`~terramask.models.resolve.load_trainer`
and the :class:`~terramask.models.finetune.trainable.Trainer` protocol.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from terramask.core.errors import InputError, ModelError
from terramask.eval.datasets import SegmentationDataset
from terramask.io.atomic import ensure_output_dir
from terramask.models.base import Backend
from terramask.models.finetune.run_dir import CHECKPOINT_FILE, RUN_FILE
from terramask.models.finetune.trainable import Collective, SingleProcess, Trainer, TrainItem
from terramask.models.resolve import load_backend, load_trainer
from terramask.pipelines.evaluate.config import EvalConfig
from terramask.pipelines.evaluate.readers import read_image
from terramask.pipelines.evaluate.run import evaluate_backend
from terramask.pipelines.finetune.config import DEFAULT_RAY_WORKERS, FinetuneConfig
from terramask.pipelines.finetune.data import TrainImage, load_train_images, split_images, subset
from terramask.pipelines.finetune.report import base_model_info, write_report, write_run_json

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def open_dataset(config: FinetuneConfig) -> SegmentationDataset:
    """The labelled dataset, checked (sizes, class, objects) before any model loads."""
    ds = SegmentationDataset(
        config.dataset, config.target_class, limit=config.limit, instances_per_image=config.instances_per_image,
        min_area=config.min_area, seed=config.seed, read_image=read_image,
    )
    ds.check_sizes()
    ds.check_labels()
    return ds


def click_eval(backend: Backend, dataset: SegmentationDataset, clicks: int, name: str) -> dict:
    """``terramask eval``'s click protocol on ``dataset`` with ``clicks`` clicks: its summary."""
    config = EvalConfig(
        max_clicks=clicks, miou_ks=tuple(k for k in (1, 3, 5) if k <= clicks),
        noc_thresholds=(0.85, 0.90) if clicks > 1 else (), n_boot=200, n_examples=0,
    )
    return evaluate_backend(backend, dataset, config, model_name=name, progress=False).summary


def _fresh_state(config: FinetuneConfig, train_idx: list[int], val_idx: list[int], ds: SegmentationDataset) -> dict:
    return {
        "config": config.resume_key(), "epoch": 0, "history": [], "best": None, "before": None,
        "stopped": None, "split": {"train": [ds.pairs[i].stem for i in train_idx], "val": [ds.pairs[i].stem for i in val_idx]},
    }


def _resume(trainer: Trainer, path: Path, config: FinetuneConfig) -> dict:
    state = trainer.load_state(path)
    if state.get("config") != config.resume_key():
        changed = sorted(k for k, v in config.resume_key().items() if state.get("config", {}).get(k) != v)
        raise InputError(
            f"{path.parent} holds a run with other settings ({', '.join(changed)}); "
            "use another --out, or the same options to resume it"
        )
    log.warning("resuming %s after epoch %d", path.parent, state["epoch"])
    return state


def run_finetune(
    config: FinetuneConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    trainer_factory: Callable[[Backend, FinetuneConfig], Trainer] | None = None,
) -> dict:
    """Fine-tune as the module docstring says; returns the run description
    (``terramask.json``'s content). ``trainer_factory(backend, config)`` replaces
    :func:`load_trainer` (tests). ``config.engine == "ray"`` runs the same loop on
    ``config.workers`` Ray Train workers (:mod:`terramask.models.finetune.distributed`);
    worker 0 writes the run directory."""
    ds = open_dataset(config)  # bad data and a bad split are reported before any model loads or Ray starts
    split_images(len(ds), config.val, config.seed)
    out = ensure_output_dir(out_dir)
    if config.engine == "ray":
        from terramask.models.finetune.distributed import run_data_parallel

        run_data_parallel(partial(train_worker, config, str(out), trainer_factory),
                          workers=config.workers or DEFAULT_RAY_WORKERS)
        return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    return train_worker(config, str(out), trainer_factory, SingleProcess(), progress=progress)


def train_worker(config: FinetuneConfig, out_dir: str, trainer_factory: Callable[[Backend, FinetuneConfig], Trainer] | None,
                 collective: Collective, progress: bool | None = None) -> dict:
    """One replica's training (all of it when alone). Every worker samples the same
    prompts and keeps its share of each global batch; worker 0 alone evaluates, writes
    the run directory and shows progress; decisions (val mIoU@1) are broadcast from it."""
    lead = collective.rank == 0
    ds = open_dataset(config)
    train_idx, val_idx = split_images(len(ds), config.val, config.seed)
    out = Path(out_dir)
    backend = load_backend(config.model, checkpoint=config.checkpoint, device=config.device, cache=True)
    factory = trainer_factory or (lambda b, c: load_trainer(b, c.train, lr=c.lr, weight_decay=c.weight_decay))
    trainer = factory(backend, config)
    base = base_model_info(config, trainer, backend)
    state_path = out / STATE_FILE
    state = _resume(trainer, state_path, config) if state_path.is_file() else _fresh_state(config, train_idx, val_idx, ds)
    if not lead:
        collective.barrier()  # worker 0 embeds the images first: the others read its cache entries
    images = load_train_images(subset(ds, train_idx), backend, trainer, keep_images=config.train == "decoder+lora")
    if lead:
        collective.barrier()
    val_ds = subset(ds, val_idx) if val_idx else None
    if lead and state["before"] is None and val_ds is not None:
        state["before"] = click_eval(trainer.backend, val_ds, config.eval_clicks, f"{base['name']} (before)")
    log.info("training %d parameters on %d objects of %d images (worker %d of %d)", trainer.trainable_parameters(),
             sum(len(im.targets) for im in images), len(images), collective.rank + 1, collective.world)
    for epoch in range(state["epoch"], config.epochs):
        if state["stopped"]:
            break
        record = _epoch(trainer, images, config, epoch, progress if lead else False, out, state, collective)
        val_miou = _mean_iou1(trainer.backend, val_ds) if lead and val_ds is not None else None
        val_miou = collective.broadcast(val_miou)
        record["val_miou@1"] = val_miou
        state["history"].append(record)
        best = state["best"]
        if best is None or val_miou is None or val_miou > best["val_miou@1"]:
            state["best"] = {"epoch": epoch + 1, "val_miou@1": val_miou}
            if lead:
                trainer.save_checkpoint(out / CHECKPOINT_FILE)
                write_run_json(out, config, base, ds, state, None)
        state["epoch"] = epoch + 1
        if val_miou is not None and epoch + 1 - state["best"]["epoch"] >= config.patience:
            state["stopped"] = f"early stopping: no better val mIoU@1 in {config.patience} epoch(s)"
        if lead:
            trainer.save_state(state_path, state)
    if not lead:
        return state
    after = None
    if val_ds is not None:
        after = click_eval(_best_model(trainer, out, config), val_ds, config.eval_clicks, f"{base['name']} fine-tuned")
    info = write_run_json(out, config, base, ds, state, after)
    write_report(out, info, state["history"])
    return info


def _best_model(trainer: Trainer, out: Path, config: FinetuneConfig) -> Backend:
    """The best checkpoint as a backend: with a frozen encoder, its decoder loaded into the
    trainer (the cached embeddings stay valid); with adapters, ``--model RUN_DIR``."""
    if config.train == "decoder":
        trainer.load_decoder(out / CHECKPOINT_FILE)
        return trainer.backend
    return load_backend(str(out), device=config.device, cache=True)


def _epoch(trainer: Trainer, images: list[TrainImage], config: FinetuneConfig, epoch: int,
           progress: bool | None, out: Path, state: dict, collective: Collective) -> dict[str, Any]:
    """One pass over every training object; the mean losses and the time. Each global
    batch of ``batch_size`` objects is drawn whole (same prompts on every worker) and
    this worker steps on its share ``batch[rank::world]``."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng([config.seed, epoch])
    objects = [(k, i) for k, im in enumerate(images) for i in range(len(im.targets))]
    order = rng.permutation(len(objects))
    sums = np.zeros(4)
    t0 = time.perf_counter()
    steps = range(0, len(order), config.batch_size)
    bar = tqdm(steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False,
               disable=(None if progress is None else not progress))
    for n_step, start in enumerate(bar, start=1):
        batch = []
        for j in order[start : start + config.batch_size]:
            k, i = objects[int(j)]
            im = images[k]
            batch.append(TrainItem(im.embedding, im.targets[i], im.prompt(i, config.prompts, rng), im.image))
        share = batch[collective.rank :: collective.world]
        step = (trainer.train_step(share, total=len(batch), collective=collective) if collective.world > 1
                else trainer.train_step(batch))
        if not step.finite:
            _stop_on_nan(out, config, state, epoch, n_step)
        sums += [step.loss * len(batch), step.focal * len(batch), step.dice * len(batch), step.iou_mse * len(batch)]
        bar.set_postfix(loss=f"{step.loss:.3f}")
    bar.close()
    mean = sums / max(1, len(objects))
    return {"epoch": epoch + 1, "loss": float(mean[0]), "focal": float(mean[1]), "dice": float(mean[2]),
            "iou_mse": float(mean[3]), "objects": len(objects), "seconds": round(time.perf_counter() - t0, 2)}


def _stop_on_nan(out: Path, config: FinetuneConfig, state: dict, epoch: int, step: int) -> None:
    best = state["best"]
    kept = (f"the best checkpoint (epoch {best['epoch']}) is kept in {out / CHECKPOINT_FILE}" if best
            else "no checkpoint was saved (no epoch finished)")
    raise ModelError(f"training stopped: the loss became NaN/inf at epoch {epoch + 1}, step {step} "
                     f"(try a lower --lr); {kept}")


def _mean_iou1(backend: Backend, val_ds: SegmentationDataset) -> float:
    summary = click_eval(backend, val_ds, 1, "val")
    value = summary.get("miou@1")
    return float(value) if value is not None else 0.0
