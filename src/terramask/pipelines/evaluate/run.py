"""Evaluate backends on a labelled dataset: click simulator, box prompts, automatic mode.

One image is in memory at a time; results are accumulated with the streaming
accumulators of :mod:`terramask.eval.streaming`, plus one row per image (for
``metrics.csv``), the per-object values of the headline metrics (for the intervals of
:mod:`terramask.eval.intervals`) and a handful of small best/worst examples.

Modes:

- ``clicks``: the click simulator (:func:`terramask.eval.clicks.simulate_clicks`) on
  every selected object; NoC@85/90, mIoU@k, and the per-mask scores of the final mask.
- ``box``: the tight box of every object as the only prompt (single-mask output);
  IoU, precision, recall, F1 and boundary F.
- ``auto``: automatic generation on the whole image (:mod:`.automatic`); per object the
  best IoU with any predicted mask, recall@0.5/0.75, coverage.
- ``find``: every instance found from exemplars or phrases (:mod:`.find`), matched one-to-one
  at IoU 0.5: precision, recall, F1, AP50, mean IoU of matched instances.

Several sampling seeds (``--seeds N``) evaluate one dataset per seed with the same
accumulators: the summary pools all objects, ``summary["spread"]`` gives mean, standard
deviation over seeds and a 95 % bootstrap interval over objects for each headline metric.
Backends with a ``seed`` attribute (``classic``) are seeded with the sampling seed, so a
run is reproducible whatever ran before it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from terramask.core.errors import InputError
from terramask.eval.clicks import box_prediction, simulate_clicks, tight_box
from terramask.eval.datasets import Sample, SegmentationDataset
from terramask.eval.intervals import spreads
from terramask.eval.metrics import mask_scores
from terramask.eval.streaming import AutoAccumulator, ClickAccumulator, MaskAccumulator, iou_after, noc
from terramask.models.base import Backend, Embedding
from terramask.pipelines.evaluate.automatic import auto_image, generate_masks, iter_predicted_masks
from terramask.pipelines.evaluate.config import MODES, EvalConfig
from terramask.pipelines.evaluate.examples import EXAMPLE_SIDE, Example, ExampleKeeper, make_example
from terramask.pipelines.evaluate.find import FindAccumulator, find_image

__all__ = [
    "EXAMPLE_SIDE",
    "MODES",
    "EvalConfig",
    "Example",
    "ExampleKeeper",
    "ModelResult",
    "evaluate_backend",
    "generate_masks",
    "iter_predicted_masks",
    "load_model",
    "make_example",
    "run_evaluation",
]

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10  # images between progress lines when stderr is not a terminal
UNITS = {"clicks": "click", "box": "box", "auto": "image", "find": "image"}


@dataclass
class ModelResult:
    """Everything measured for one model: ``summary`` (JSON-friendly), ``rows`` (one per
    image and seed), the best/worst ``Example`` crops, and ``per_object`` values of the
    headline metrics (``{metric: [value per object]}``, with ``object_seeds`` alongside)."""

    model: str
    mode: str
    summary: dict
    rows: list[dict]
    best: list[Example]
    worst: list[Example]
    per_object: dict[str, list[float]] = field(default_factory=dict)
    object_seeds: list[int] = field(default_factory=list)


def _headline(config: EvalConfig) -> list[str]:
    """Metrics that get intervals: NoC and mIoU@k (clicks), IoU and recall (box), recall and best IoU (auto)."""
    if config.mode == "clicks":
        return [f"noc@{_pct(t)}" for t in config.noc_thresholds] + [f"miou@{k}" for k in config.miou_ks]
    if config.mode == "box":
        return ["iou", "recall", "precision"]
    if config.mode == "find":
        return ["recall@0.5"]
    return [f"recall@{t:g}" for t in config.auto_thresholds] + ["mean_best_iou"]


# -- the loops -----------------------------------------------------------------------


def _progress(iterable: Iterable[Sample], total: int, desc: str, progress: bool | None) -> Iterator[Sample]:
    """A bar on a terminal; one line per :data:`PROGRESS_EVERY` images on stderr when it is
    not a terminal (a log file); nothing when ``progress`` is False."""
    if progress is False:
        yield from iterable
        return
    if progress is None and not sys.stderr.isatty():
        t0 = time.perf_counter()
        done = 0
        for item in iterable:
            yield item
            done += 1
            if done % PROGRESS_EVERY == 0 or done == total:
                print(f"{desc}: {done}/{total} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def _seed_backend(backend: Backend, seed: int) -> None:
    """Backends with their own random generator (``classic``: GrabCut) follow ``--seed``."""
    if isinstance(getattr(backend, "seed", None), int):
        backend.seed = seed  # type: ignore[attr-defined]


def _passes(dataset: SegmentationDataset | Sequence[SegmentationDataset]) -> list[SegmentationDataset]:
    return [dataset] if isinstance(dataset, SegmentationDataset) else list(dataset)


def evaluate_backend(
    backend: Backend,
    dataset: SegmentationDataset | Sequence[SegmentationDataset],
    config: EvalConfig | None = None,
    *,
    model_name: str | None = None,
    progress: bool | None = None,
) -> ModelResult:
    """Evaluate one backend on every image of ``dataset`` (or of several datasets, one per
    sampling seed, pooled); see the module docstring."""
    config = config or EvalConfig()
    name: str = model_name or str(getattr(backend, "name", type(backend).__name__))
    passes = _passes(dataset)
    keeper = ExampleKeeper(config.n_examples)
    rows: list[dict] = []
    final = MaskAccumulator()  # clicks mode: scores of the final masks
    acc: Any
    if config.mode == "clicks":
        acc = ClickAccumulator(config.max_clicks, tuple(config.noc_thresholds), tuple(config.miou_ks))
    elif config.mode == "box":
        acc = MaskAccumulator()
    elif config.mode == "find":
        acc = FindAccumulator()
    else:
        acc = AutoAccumulator(tuple(config.auto_thresholds))
    headline = _headline(config)
    per_object: dict[str, list[float]] = {k: [] for k in headline}
    object_seeds: list[int] = []
    t_embed = t_prompt = 0.0
    n_prompts = n_small = n_total = 0
    t_start = time.perf_counter()
    total = sum(len(ds) for ds in passes)
    for ds in passes:
        _seed_backend(backend, ds.seed)
        first_pass = ds is passes[0]
        for sample in _progress(ds, len(ds), f"{name} seed {ds.seed}" if len(passes) > 1 else name, progress):
            if first_pass:  # the same labelled objects in every pass; only the sample differs
                n_small += sample.n_small
                n_total += sample.n_total
            t0 = time.perf_counter()
            if config.mode == "find":
                found = find_image(backend, name, sample, config, acc, ds.seed, keeper)
                if found is None:
                    rows.append({"model": name, "seed": ds.seed, "image": sample.stem, "n_objects": sample.n_instances,
                                 "skipped": "too few objects", "seconds": 0.0})
                    continue
                row, dt, found_objects = found
                per = {"recall@0.5": found_objects.astype(np.float64).tolist()}
                t_prompt += dt
                n_prompts += 1
            elif config.mode == "auto":
                row, dt, best = auto_image(backend, name, sample, config, acc, keeper)
                per = {f"recall@{t:g}": (best >= t).astype(np.float64).tolist() for t in config.auto_thresholds}
                per["mean_best_iou"] = best.tolist()
                t_prompt += dt
                n_prompts += 1
            else:
                if sample.n_instances == 0:
                    rows.append({"model": name, "seed": ds.seed, "image": sample.stem, "n_objects": 0, "seconds": 0.0})
                    continue
                embedding = backend.set_image(sample.image)
                t1 = time.perf_counter()
                t_embed += t1 - t0
                if config.mode == "clicks":
                    per = _clicks_image(backend, embedding, sample, config, acc, final, keeper)
                    n_prompts += int(sum(per["clicks"]))
                else:
                    per = _box_image(backend, embedding, sample, config, acc, keeper)
                    n_prompts += sample.n_instances
                t_prompt += time.perf_counter() - t1
                row = {k: _mean(v) for k, v in per.items()}
            for k in headline:
                per_object[k].extend(per.get(k, []))
            object_seeds.extend([ds.seed] * (len(per["recall@0.5"]) if config.mode == "find" else sample.n_instances))
            rows.append({"model": name, "seed": ds.seed, "image": sample.stem, "n_objects": sample.n_instances, **row, "seconds": round(time.perf_counter() - t0, 4)})
    summary = acc.compute()
    if config.mode == "clicks":
        summary["final_mask"] = final.compute()
    unit = UNITS[config.mode]
    summary.update(
        {
            "model": name,
            "mode": config.mode,
            "images": total,
            "seeds": [ds.seed for ds in passes],
            "objects_total": n_total,
            "objects_below_min_area": n_small,
            "seconds_total": round(time.perf_counter() - t_start, 3),
            "seconds_embedding": round(t_embed, 3),
            "seconds_prompts": round(t_prompt, 3),
            "prompts": n_prompts,
            "prompt_unit": unit,
            "ms_per_prompt": None if n_prompts == 0 else round(1000 * t_prompt / n_prompts, 2),
            "spread": spreads(per_object, object_seeds, config.n_boot),
        }
    )
    if config.mode == "auto":
        summary["auto_params"] = config.auto_params_for(name)
    return ModelResult(name, config.mode, summary, rows, keeper.best, keeper.worst, per_object, object_seeds)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _clicks_image(
    backend: Backend, embedding: Embedding, sample: Sample, config: EvalConfig, acc: ClickAccumulator, final: MaskAccumulator, keeper: ExampleKeeper
) -> dict[str, list[float]]:
    """Simulate clicks on every object of ``sample``; per-object values by metric."""
    per: dict[str, list[float]] = {}
    for i in range(sample.n_instances):
        gt = sample.instance_mask(i)
        trace = simulate_clicks(
            backend,
            embedding,
            gt,
            sample.ignore,
            max_clicks=config.max_clicks,
            stop_iou=config.stop_iou,
            multimask=config.multimask,
            use_prior=config.use_prior,
            region=config.region,
        )
        acc.update(trace.ious)
        scores = mask_scores(trace.mask, gt, sample.ignore, tolerance=config.boundary_tolerance)
        final.update(scores)
        for t in config.noc_thresholds:
            per.setdefault(f"noc@{_pct(t)}", []).append(noc(trace.ious, t, config.max_clicks))
        for k in config.miou_ks:
            per.setdefault(f"miou@{k}", []).append(iou_after(trace.ious, k))
        per.setdefault("final_iou", []).append(trace.final_iou)
        per.setdefault("final_boundary_f", []).append(scores.boundary_f)
        per.setdefault("clicks", []).append(trace.n_clicks)
        # Examples are ranked by the IoU after one click and show that first prediction.
        iou1 = trace.ious[0]
        keeper.add(
            iou1,
            partial(
                make_example,
                sample,
                sample.stem,
                iou1,
                f"{sample.stem} #{int(sample.instance_ids[i])}: IoU@1 {iou1:.2f}, "
                + (f"NoC@90 {noc(trace.ious, 0.9, config.max_clicks)}" if max(trace.ious) >= 0.9 else f"IoU 0.90 not reached in {trace.n_clicks}"),
                gt,
                trace.first_mask if trace.first_mask is not None else np.zeros_like(gt),
                trace.points[:1],
                trace.labels[:1],
            ),
        )
    return per


def _box_image(
    backend: Backend, embedding: Embedding, sample: Sample, config: EvalConfig, acc: MaskAccumulator, keeper: ExampleKeeper
) -> dict[str, list[float]]:
    """Prompt every object of ``sample`` with its tight box; per-object values by metric."""
    per: dict[str, list[float]] = {}
    for i in range(sample.n_instances):
        gt = sample.instance_mask(i)
        pred = box_prediction(backend, embedding, gt)
        scores = mask_scores(pred, gt, sample.ignore, tolerance=config.boundary_tolerance)
        acc.update(scores)
        for k, v in scores.to_dict().items():
            if k != "tolerance":
                per.setdefault(k, []).append(v)
        keeper.add(
            scores.iou,
            partial(
                make_example, sample, sample.stem, scores.iou, f"{sample.stem} #{int(sample.instance_ids[i])}: IoU {scores.iou:.2f}", gt, pred, box=tight_box(gt)
            ),
        )
    return per


def _pct(t: float) -> str:
    v = t * 100
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:g}"


# -- several models, written to disk ---------------------------------------------------


def load_model(name: str, checkpoint: str | None = None) -> Backend:
    """A backend through :func:`terramask.models.resolve.load_backend`.

    ``name`` is a registry name (``classic``, ``sam-vit-b`` …). A name that is not in the
    registry but comes with a ``checkpoint`` is a label for that file (e.g. a fine-tuned
    model, ``--model my-ft --checkpoint my-ft=ft.pth``): the architecture is read from it.
    """
    from terramask.core.errors import UnknownModelError
    from terramask.models import registry, resolve

    if checkpoint is not None:
        try:
            registry.get_spec(name)
        except UnknownModelError:
            return resolve.load_backend(None, checkpoint=checkpoint)
    return resolve.load_backend(name, checkpoint=checkpoint)


def seeds_from(first: int, count: int) -> list[int]:
    """The sampling seeds of a run: ``first, first + 1, …`` (``count`` of them)."""
    if count < 1:
        raise InputError(f"the number of seeds must be >= 1, got {count}")
    return [first + i for i in range(count)]


def run_evaluation(
    dataset: SegmentationDataset,
    models: list[str],
    config: EvalConfig,
    out_dir,
    *,
    seeds: Sequence[int] | None = None,
    checkpoints: dict[str, str] | None = None,
    loader: Callable[[str, str | None], Backend] | None = None,
    progress: bool | None = None,
    plots: bool = True,
) -> dict:
    """Evaluate each model in turn and write ``metrics.json``, ``metrics.csv`` and
    ``report.md`` (+ ``plots/*.png``) into ``out_dir``. Returns the metrics dict.

    ``seeds``: sampling seeds, one pass over the dataset each (default: the dataset's
    own seed). ``loader(name, checkpoint)`` builds a backend (default :func:`load_model`);
    models are loaded one at a time, so only one is in memory. Labels are checked first
    (:meth:`SegmentationDataset.check_labels`): a class that no mask holds, a class value
    the masks cannot hold, or no object above the minimum area stop the run before any
    model is loaded."""
    from terramask.io.atomic import ensure_output_dir
    from terramask.pipelines.evaluate.report import write_outputs

    if not models:
        raise InputError("give at least one --model to evaluate")
    if len(set(models)) != len(models):
        raise InputError(f"a model is listed twice: {', '.join(models)}")
    loader = loader or load_model
    checkpoints = dict(checkpoints or {})
    if unknown := set(checkpoints) - set(models):
        raise InputError(f"checkpoint given for a model that is not evaluated: {', '.join(sorted(unknown))}")
    if unknown := {k.split(":", 1)[0] for k in config.auto_params if ":" in k} - set(models):
        raise InputError(f"generation parameter given for a model that is not evaluated: {', '.join(sorted(unknown))}")
    seeds = [dataset.seed] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct and at least one, got {seeds}")
    dataset.check_sizes()
    dataset.check_labels()
    passes = [dataset.with_seed(s) for s in seeds]
    out = ensure_output_dir(out_dir)
    results = []
    for name in models:
        backend = loader(name, checkpoints.get(name))
        log.info("evaluating %s on %s (%d images, mode %s, seeds %s)", name, dataset.name, len(dataset), config.mode, seeds)
        results.append(evaluate_backend(backend, passes, config, model_name=name, progress=progress))
    described = {**dataset.describe(), "seeds": seeds}
    return write_outputs(out, described, config.to_dict(), results, plots=plots)
