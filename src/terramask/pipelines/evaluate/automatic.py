"""Automatic mode of an evaluation: generate masks for a whole image and score every
labelled object by its best IoU with any predicted mask.

Generation goes through :func:`terramask.pipelines.scene.segmenters.segment_function`,
the one dispatch between a backend's own ``generate`` (e.g. ``classic``) and automatic
mask generation (SAM family), so ``eval --mode auto`` measures what ``auto`` produces.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from terramask.core.errors import ModelError
from terramask.core.maskset import MaskSet
from terramask.eval.datasets import Sample
from terramask.eval.metrics import best_instance_ious
from terramask.eval.streaming import AutoAccumulator
from terramask.models.base import Backend
from terramask.pipelines.evaluate.config import EvalConfig
from terramask.pipelines.evaluate.examples import ExampleKeeper, make_example
from terramask.pipelines.scene.segmenters import segment_function


def generate_masks(backend: Backend, image: np.ndarray, params: dict | None = None) -> Any:
    """Automatic masks of ``image`` ``(H, W, 3)`` uint8 with ``backend``.

    ``params``: ``mode`` (``fast``/``exact``, SAM family), ``preset`` (an automatic-mask
    preset name) and any generation parameter: ``AmgParams`` fields for the SAM family,
    ``generate`` options for backends with their own generation (``classic``). Returns a
    MaskSet or the generator's compact result; read masks from either with
    :func:`iter_predicted_masks`.
    """
    params = dict(params or {})
    mode = params.pop("mode", "fast")
    preset = params.pop("preset", None)
    if preset is not None:
        from terramask.pipelines.amg.presets import resolve_params

        segment = segment_function(backend, resolve_params(preset, **params), mode)
    else:
        segment = segment_function(backend, params or None, mode)
    return segment(image)  # type: ignore[arg-type]  # backends take a GeoImage or the rgb8 array itself


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


def auto_image(
    backend: Backend, name: str, sample: Sample, config: EvalConfig, acc: AutoAccumulator, keeper: ExampleKeeper
) -> tuple[dict, float, np.ndarray]:
    """Generate and score one image: ``(row for metrics.csv, seconds, best IoU per object (n,))``."""
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
    return row, dt, best
