"""Evaluate backends on a labelled dataset: click simulator, box prompts, automatic mode.

One image is in memory at a time; results are accumulated with the streaming
accumulators of :mod:`terramask.eval.streaming`, plus one row per image (for
``metrics.csv``) and a handful of small best/worst examples (for the report overlays).

Modes:

- ``clicks``: the click simulator (:func:`terramask.eval.clicks.simulate_clicks`) on
  every selected object; NoC@85/90, mIoU@k, and the per-mask scores of the final mask.
- ``box``: the tight box of every object as the only prompt (single-mask output);
  IoU, precision, recall, F1 and boundary F.
- ``auto``: the backend's automatic generation on the whole image (``backend.generate``
  for generators such as ``classic``, else :func:`terramask.pipelines.amg.generator.generate`);
  per object the best IoU with any predicted mask, recall@0.5/0.75, coverage.
"""

from __future__ import annotations

import heapq
import importlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from terramask.core.errors import InputError, ModelError
from terramask.core.maskset import MaskSet
from terramask.eval.clicks import MULTIMASK, REGIONS, box_prediction, simulate_clicks, tight_box
from terramask.eval.datasets import Sample, SegmentationDataset
from terramask.eval.metrics import best_instance_ious, mask_scores
from terramask.eval.streaming import AutoAccumulator, ClickAccumulator, MaskAccumulator

log = logging.getLogger(__name__)

MODES = ("clicks", "box", "auto")
EXAMPLE_SIDE = 256  # longest side of the crops kept for the report (pixels)


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate. Defaults follow the published protocols (RITM / SAM)."""

    mode: str = "clicks"
    max_clicks: int = 20
    stop_iou: float = 0.90
    noc_thresholds: tuple[float, ...] = (0.85, 0.90)
    miou_ks: tuple[int, ...] = (1, 3, 5)
    multimask: str = "first"
    region: str = "deepest"
    use_prior: bool = True
    boundary_tolerance: float = 2.0
    auto_thresholds: tuple[float, ...] = (0.5, 0.75)
    auto_params: dict = field(default_factory=dict)
    n_examples: int = 3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown evaluation mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not 1 <= self.max_clicks <= 1000:
            raise InputError(f"max clicks must be in 1..1000, got {self.max_clicks}")
        if not 0.0 < self.stop_iou <= 1.0:
            raise InputError(f"stop IoU must be in (0, 1], got {self.stop_iou}")
        for t in (*self.noc_thresholds, *self.auto_thresholds):
            if not 0.0 < t <= 1.0:
                raise InputError(f"IoU thresholds must be in (0, 1], got {t}")
        if self.noc_thresholds and self.stop_iou < max(self.noc_thresholds):
            raise InputError(
                f"stop IoU {self.stop_iou} is below the NoC threshold {max(self.noc_thresholds)}; "
                "the simulation would stop before NoC can be measured"
            )
        for k in self.miou_ks:
            if not 1 <= k <= self.max_clicks:
                raise InputError(f"mIoU@{k} needs 1 <= k <= max clicks ({self.max_clicks})")
        if self.multimask not in MULTIMASK:
            raise InputError(f"unknown multimask policy {self.multimask!r}; use one of {', '.join(MULTIMASK)}")
        if self.region not in REGIONS:
            raise InputError(f"unknown error-region rule {self.region!r}; use one of {', '.join(REGIONS)}")
        if not np.isfinite(self.boundary_tolerance) or self.boundary_tolerance < 0:
            raise InputError(f"boundary tolerance must be >= 0 pixels, got {self.boundary_tolerance}")
        if self.n_examples < 0:
            raise InputError(f"number of examples must be >= 0, got {self.n_examples}")

    def to_dict(self) -> dict:
        return asdict(self)

    def auto_params_for(self, model: str) -> dict:
        """Generation parameters of ``model``: keys without a prefix apply to every model,
        ``"MODEL:key"`` only to that model (and win)."""
        out = {k: v for k, v in self.auto_params.items() if ":" not in k}
        prefix = f"{model}:"
        out.update({k[len(prefix) :]: v for k, v in self.auto_params.items() if k.startswith(prefix)})
        return out


@dataclass
class Example:
    """A small crop kept for the report: the image, the label, the prediction and the prompts.

    ``image (h, w, 3)`` uint8, ``gt``/``pred``/``ignore`` ``(h, w)`` bool, ``points (K, 2)``
    and ``box (4,)`` in crop pixels (after the same downscale as the crop), ``score`` the
    value examples are ranked by (IoU), ``title`` a short description.
    """

    stem: str
    score: float
    title: str
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    ignore: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: np.ndarray | None = None
    pred_labels: np.ndarray | None = None  # auto mode: (h, w) int32 ids of the predicted masks
    gt_labels: np.ndarray | None = None  # auto mode: (h, w) int32 ids of the labelled objects


class ExampleKeeper:
    """Keeps the ``n`` best and ``n`` worst examples seen (bounded memory)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._best: list = []
        self._worst: list = []
        self._count = 0

    def wants(self, score: float) -> bool:
        if self.n == 0:
            return False
        if len(self._best) < self.n or len(self._worst) < self.n:
            return True
        return score > self._best[0][0] or -score > self._worst[0][0]

    def add(self, score: float, make: Callable[[], Example]) -> None:
        if not self.wants(score):
            return
        ex = make()
        self._count += 1
        for heap, key in ((self._best, score), (self._worst, -score)):
            item = (key, -self._count, ex)
            if len(heap) < self.n:
                heapq.heappush(heap, item)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, item)

    @property
    def best(self) -> list[Example]:
        return [ex for _, _, ex in sorted(self._best, key=lambda t: (-t[0], -t[1]))]

    @property
    def worst(self) -> list[Example]:
        return [ex for _, _, ex in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]


@dataclass
class ModelResult:
    """Everything measured for one model: ``summary`` (JSON-friendly), ``rows`` (one per
    image), the best/worst ``Example`` crops, and the IoU histogram under ``summary``."""

    model: str
    mode: str
    summary: dict
    rows: list[dict]
    best: list[Example]
    worst: list[Example]


# -- crops for the report ------------------------------------------------------------


def _crop_box(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` around the union of masks with a 25 % + 8 px margin."""
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        union |= m
    ys, xs = np.nonzero(union)
    if not ys.size:
        return 0, shape[0], 0, shape[1]
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int(0.25 * (y1 - y0)) + 8, int(0.25 * (x1 - x0)) + 8
    return max(y0 - my, 0), min(y1 + my, shape[0]), max(x0 - mx, 0), min(x1 + mx, shape[1])


def _resample(arr: np.ndarray, step: int, up: int) -> np.ndarray:
    """Keep every ``step``-th pixel, then repeat each pixel ``up`` times (nearest neighbour)."""
    if step > 1:
        arr = arr[::step, ::step]
    if up > 1:
        arr = np.repeat(np.repeat(arr, up, axis=0), up, axis=1)
    return np.ascontiguousarray(arr)


def make_example(
    sample: Sample,
    stem: str,
    score: float,
    title: str,
    gt: np.ndarray,
    pred: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    whole: bool = False,
    pred_labels: np.ndarray | None = None,
    gt_labels: np.ndarray | None = None,
) -> Example:
    """Crop around ``gt`` and ``pred`` (or keep the whole image), resampled by an integer
    factor so the longest side is close to :data:`EXAMPLE_SIDE` (at most that when
    shrinking, nearest neighbour when enlarging small objects)."""
    shape = gt.shape
    y0, y1, x0, x1 = (0, shape[0], 0, shape[1]) if whole else _crop_box([gt, pred], shape)
    side = max(y1 - y0, x1 - x0)
    step = max(1, int(np.ceil(side / EXAMPLE_SIDE)))
    up = max(1, EXAMPLE_SIDE // side) if step == 1 else 1
    sl = (slice(y0, y1), slice(x0, x1))
    # points are pixel indices: drawn on the centre of the enlarged pixel block
    pts = np.zeros((0, 2)) if points is None else (np.asarray(points, dtype=np.float64) - [x0, y0]) / step * up + (up - 1) / 2
    bx = None if box is None else (np.asarray(box, dtype=np.float64) - [x0, y0, x0, y0]) / step * up
    return Example(
        stem=stem,
        score=float(score),
        title=title,
        image=_resample(sample.image[sl], step, up),
        gt=_resample(gt[sl], step, up),
        pred=_resample(pred[sl], step, up),
        ignore=_resample(sample.ignore[sl], step, up),
        points=pts,
        labels=np.zeros((0,), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64),
        box=bx,
        pred_labels=None if pred_labels is None else _resample(pred_labels[sl], step, up),
        gt_labels=None if gt_labels is None else _resample(gt_labels[sl], step, up),
    )


# -- automatic generation ------------------------------------------------------------


def generate_masks(backend: Any, image: np.ndarray, params: dict | None = None) -> Any:
    """Automatic masks of ``image`` ``(H, W, 3)`` uint8 with ``backend``.

    Backends with their own ``generate`` (the Generator capability, e.g. ``classic``) use
    it with ``params`` as keyword arguments. Others (SAM) go through
    :mod:`terramask.pipelines.amg.generator` (compact masks, bounded memory): ``params`` may hold
    ``preset`` (a preset name), ``mode`` (``fast``/``exact``) and any generator parameter
    (``points_per_side`` …). Returns a MaskSet or the generator's compact result; read
    masks from either with :func:`iter_predicted_masks`.
    """
    params = dict(params or {})
    if callable(getattr(backend, "generate", None)):
        return backend.generate(image, **params)
    try:
        amg = importlib.import_module("terramask.pipelines.amg.generator")
        presets = importlib.import_module("terramask.pipelines.amg.presets")
    except ImportError as exc:
        raise ModelError(f"automatic mode for {getattr(backend, 'name', backend)!r} needs terramask.pipelines.amg.generator ({exc})") from exc
    mode = params.pop("mode", "fast")
    preset = params.pop("preset", None)
    amg_params = presets.resolve_params(preset, **params) if (preset is not None or params) else None
    run = getattr(amg, "generate_compact", None) or amg.generate
    return run(backend, image, amg_params, mode)


def iter_predicted_masks(result: Any, shape: tuple[int, int]) -> Iterable[np.ndarray]:
    """``(H, W)`` bool masks, one at a time, from a MaskSet, an ``(N, H, W)`` array, a
    compact generator result (``masks.dense(i)``), or records whose ``segmentation`` is
    a bool array or an RLE dict (COCO or uncompressed)."""
    if isinstance(result, MaskSet):
        yield from result.masks
        return
    if isinstance(result, np.ndarray):
        yield from np.asarray(result, dtype=bool).reshape(-1, *shape)
        return
    masks = getattr(result, "masks", None)
    if masks is not None and callable(getattr(masks, "dense", None)):
        for i in range(len(masks)):
            yield np.asarray(masks.dense(i), dtype=bool)
        return
    if masks is not None and not isinstance(result, (list, tuple)):
        yield from np.asarray(masks, dtype=bool)
        return
    from terramask.core.rle import rle_to_mask

    for rec in result:
        seg = rec["segmentation"] if isinstance(rec, dict) else rec
        yield rle_to_mask(seg) if isinstance(seg, dict) else np.asarray(seg, dtype=bool)


# -- the loops -----------------------------------------------------------------------


def _progress(iterable, total: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar on a terminal and stays quiet when piped.
    return tqdm(iterable, total=total, desc=desc, unit="img", disable=None if progress is None else not progress, leave=False)


def evaluate_backend(
    backend: Any,
    dataset: SegmentationDataset,
    config: EvalConfig | None = None,
    *,
    model_name: str | None = None,
    progress: bool | None = None,
) -> ModelResult:
    """Evaluate one backend on every image of ``dataset``; see the module docstring."""
    config = config or EvalConfig()
    name = model_name or getattr(backend, "name", type(backend).__name__)
    keeper = ExampleKeeper(config.n_examples)
    rows: list[dict] = []
    if config.mode == "clicks":
        acc: Any = ClickAccumulator(config.max_clicks, tuple(config.noc_thresholds), tuple(config.miou_ks))
        final = MaskAccumulator()
    elif config.mode == "box":
        acc = MaskAccumulator()
        final = None
    else:
        acc = AutoAccumulator(tuple(config.auto_thresholds))
        final = None
    t_embed = t_prompt = 0.0
    n_prompts = 0
    n_small = n_total = 0
    t_start = time.perf_counter()
    for sample in _progress(dataset, len(dataset), name, progress):
        n_small += sample.n_small
        n_total += sample.n_total
        t0 = time.perf_counter()
        if config.mode == "auto":
            row, dt = _auto_image(backend, name, sample, config, acc, keeper)
            t_prompt += dt
            n_prompts += 1
        else:
            if sample.n_instances == 0:
                rows.append(_empty_row(name, sample, config))
                continue
            embedding = backend.set_image(sample.image)
            t1 = time.perf_counter()
            t_embed += t1 - t0
            if config.mode == "clicks":
                row, n = _clicks_image(backend, embedding, sample, config, acc, final, keeper)
            else:
                row, n = _box_image(backend, embedding, sample, config, acc, keeper)
            n_prompts += n
            t_prompt += time.perf_counter() - t1
        row = {"model": name, "image": sample.stem, "n_objects": sample.n_instances, **row, "seconds": round(time.perf_counter() - t0, 4)}
        rows.append(row)
    summary = acc.compute()
    if final is not None:
        summary["final_mask"] = final.compute()
    summary.update(
        {
            "model": name,
            "mode": config.mode,
            "images": len(dataset),
            "objects_total": n_total,
            "objects_below_min_area": n_small,
            "seconds_total": round(time.perf_counter() - t_start, 3),
            "seconds_embedding": round(t_embed, 3),
            "seconds_prompts": round(t_prompt, 3),
            "prompts": n_prompts,
            "ms_per_prompt": None if n_prompts == 0 else round(1000 * t_prompt / n_prompts, 2),
        }
    )
    if config.mode == "auto":
        summary["auto_params"] = config.auto_params_for(name)
    return ModelResult(name, config.mode, summary, rows, keeper.best, keeper.worst)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _empty_row(name: str, sample: Sample, config: EvalConfig) -> dict:
    return {"model": name, "image": sample.stem, "n_objects": 0, "seconds": 0.0}


def _clicks_image(backend, embedding, sample: Sample, config: EvalConfig, acc: ClickAccumulator, final: MaskAccumulator, keeper: ExampleKeeper):
    from terramask.eval.streaming import iou_after, noc

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
            lambda: make_example(
                sample,
                sample.stem,
                iou1,
                f"{sample.stem} #{int(sample.instance_ids[i])}: IoU@1 {iou1:.2f}, "
                + (f"NoC@90 {noc(trace.ious, 0.9, config.max_clicks)}" if max(trace.ious) >= 0.9 else f"IoU 0.90 not reached in {trace.n_clicks}"),
                gt,
                trace.first_mask,
                trace.points[:1],
                trace.labels[:1],
            ),
        )
    row = {k: _mean(v) for k, v in per.items()}
    return row, int(sum(per["clicks"]))


def _box_image(backend, embedding, sample: Sample, config: EvalConfig, acc: MaskAccumulator, keeper: ExampleKeeper):
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
            lambda: make_example(
                sample, sample.stem, scores.iou, f"{sample.stem} #{int(sample.instance_ids[i])}: IoU {scores.iou:.2f}", gt, pred, box=tight_box(gt)
            ),
        )
    return {k: _mean(v) for k, v in per.items()}, sample.n_instances


def _auto_image(backend, name: str, sample: Sample, config: EvalConfig, acc: AutoAccumulator, keeper: ExampleKeeper):
    t0 = time.perf_counter()
    result = generate_masks(backend, sample.image, config.auto_params_for(name))
    shape = sample.target.shape
    union = np.zeros(shape, dtype=bool)
    paint = np.zeros(shape, dtype=np.int32)
    n_pred = 0

    def masks():
        nonlocal n_pred
        for m in iter_predicted_masks(result, shape):
            m = np.asarray(m, dtype=bool)
            if m.shape != shape:
                raise ModelError(f"automatic generation returned a mask of grid {m.shape}; the image grid is {shape}")
            n_pred += 1
            union[m] = True
            paint[m & (paint == 0)] = n_pred
            yield m

    best = best_instance_ious(sample.instances, masks(), sample.ignore, n_instances=sample.n_instances)
    dt = time.perf_counter() - t0
    labelled = sample.target
    covered = int(np.count_nonzero(union & labelled))
    n_labelled = int(np.count_nonzero(labelled))
    acc.update(best, n_pred, covered, n_labelled)
    row: dict = {"n_predicted": n_pred}
    for t in config.auto_thresholds:
        row[f"recall@{t:g}"] = None if best.size == 0 else float(np.mean(best >= t))
    row["mean_best_iou"] = None if best.size == 0 else float(best.mean())
    row["coverage"] = None if n_labelled == 0 else covered / n_labelled
    if best.size:
        score = float(best.mean())
        keeper.add(
            score,
            lambda: make_example(
                sample,
                sample.stem,
                score,
                f"{sample.stem}: {n_pred} masks, mean best IoU {score:.2f}",
                sample.instances > 0,
                union,
                whole=True,
                pred_labels=paint,
                gt_labels=sample.instances,
            ),
        )
    return row, dt


def _pct(t: float) -> str:
    v = t * 100
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:g}"


# -- several models, written to disk ---------------------------------------------------


def load_model(name: str, checkpoint: str | None = None) -> Any:
    """A backend through :func:`terramask.models.resolve.load_backend`.

    ``name`` is a registry name (``classic``, ``sam-vit-b`` …). A name that is not in the
    registry but comes with a ``checkpoint`` is a label for that file (e.g. a fine-tuned
    model, ``--model my-ft --checkpoint my-ft=ft.pth``): the architecture is read from it.
    """
    from terramask.core.errors import UnknownModelError

    resolve = importlib.import_module("terramask.models.resolve")
    registry = importlib.import_module("terramask.models.registry")
    if checkpoint is not None:
        try:
            registry.get_spec(name)
        except UnknownModelError:
            return resolve.load_backend(None, checkpoint=checkpoint)
    return resolve.load_backend(name, checkpoint=checkpoint)


def run_evaluation(
    dataset: SegmentationDataset,
    models: list[str],
    config: EvalConfig,
    out_dir,
    *,
    checkpoints: dict[str, str] | None = None,
    loader: Callable[[str, str | None], Any] | None = None,
    progress: bool | None = None,
    plots: bool = True,
) -> dict:
    """Evaluate each model in turn and write ``metrics.json``, ``metrics.csv`` and
    ``report.md`` (+ ``plots/*.png``) into ``out_dir``. Returns the metrics dict.

    ``loader(name, checkpoint)`` builds a backend (default :func:`load_model`); models are
    loaded one at a time, so only one is in memory."""
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
    out = ensure_output_dir(out_dir)
    dataset.check_sizes()
    results = []
    for name in models:
        backend = loader(name, checkpoints.get(name))
        log.info("evaluating %s on %s (%d images, mode %s)", name, dataset.name, len(dataset), config.mode)
        results.append(evaluate_backend(backend, dataset, config, model_name=name, progress=progress))
    return write_outputs(out, dataset.describe(), config.to_dict(), results, plots=plots)
