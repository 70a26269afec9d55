"""``terramask auto`` for one scene that fits in memory: open, segment everything, write.

:func:`run_auto` reads the scene's display bands (scene-wide stretch), runs automatic
mask generation (:mod:`terramask.pipelines.amg.generator`) on the whole image, clips masks to valid
(non-nodata) pixels, applies the size filters and writes into the output folder:

- ``labels.tif``: ``uint32`` object IDs (1..N, 0 = none), the scene's CRS and transform;
  where masks overlap the smaller object stays visible;
- ``objects.gpkg``: one polygon per object (scene CRS) with ``id``, ``predicted_iou``,
  ``stability_score`` and ``area_m2``/``perimeter_m`` (``area_px``/``perimeter_px``
  without a CRS);
- ``masks.json``: the reference generator's records, COCO RLE (like its ``amg.py``;
  uncompressed RLE when ``params.output_mode`` says so);
- ``overlay.png``: every object in a random colour at 35 % opacity over the scene, like
  the reference notebook's ``show_anns``;
- ``summary.json``: counts, parameters, model, filters, timings.

Object IDs are the 1-based position in ``masks.json`` (records sorted by area, largest
first). Masks stay compact (windows) throughout, so memory grows with the objects, not
with ``objects x scene size``. Scenes larger than :data:`MAX_SIDE` pixels on a side are
refused with a pointer to the tiled pipeline (:mod:`terramask.pipelines.scene.tiled`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from affine import Affine

from terramask.core.errors import InputError
from terramask.pipelines.amg.generator import AmgResult, generate_compact, records
from terramask.pipelines.amg.filters import AreaSpec, area_keep, area_to_pixels, check_range, parse_area
from terramask.pipelines.amg.masks import CompactMasks
from terramask.pipelines.amg.params import AmgParams, check_mode

log = logging.getLogger(__name__)

#: Longest scene side (pixels) segmented as one image; larger scenes need tiling.
MAX_SIDE = 2048

OUTPUTS = ("labels.tif", "objects.gpkg", "masks.json", "overlay.png", "summary.json")


@dataclass
class AutoRun:
    """What :func:`run_auto` produced: the kept masks (compact, IDs = index + 1), the
    output paths by name and the summary written to ``summary.json``."""

    result: AmgResult
    paths: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)


# -- mask helpers ---------------------------------------------------------------------------------


def clip_to_valid(result: AmgResult, valid: np.ndarray, max_lost: float = 0.5) -> AmgResult:
    """Remove nodata pixels from every mask; drop masks that lose more than ``max_lost``
    of their area (objects that are mostly nodata) or become empty."""
    if valid.all() or len(result) == 0:
        return result
    masks = CompactMasks(result.masks.shape, result.masks.windows.copy(), list(result.masks.bits), result.masks.areas.copy())
    keep = []
    for i in range(len(masks)):
        (x0, y0), win = masks.window(i)
        if win.size == 0:
            continue
        clipped = win & valid[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
        area = int(np.count_nonzero(clipped))
        if area == 0 or area < (1.0 - max_lost) * masks.areas[i]:
            continue
        if area != masks.areas[i]:
            masks.replace(i, (x0, y0), clipped)
        keep.append(i)
    out = AmgResult(masks, result.scores, result.stability, result.points, result.crop_boxes, masks.boxes(),
                    result.transform, result.crs, result.mode, result.timings, result.extras)
    return out.subset(keep)


def sort_by_area(result: AmgResult) -> AmgResult:
    """Largest first (stable), the order of IDs in every output."""
    return result.subset(np.argsort(-result.areas, kind="stable"))


def labels_image(masks: CompactMasks, ids: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` uint32 labels painted largest first from compact masks, so the smaller
    object stays visible where masks overlap (ties: the later mask wins)."""
    n = len(masks)
    ids = np.arange(1, n + 1, dtype=np.uint32) if ids is None else np.asarray(ids, dtype=np.uint32)
    labels = np.zeros(masks.shape, dtype=np.uint32)
    for i in np.argsort(-masks.areas, kind="stable"):
        (x0, y0), win = masks.window(int(i))
        if win.size:
            region = labels[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
            region[win] = ids[i]
    return labels


def object_features(result: AmgResult, transform: Affine, crs: str | None) -> list:
    """One :class:`terramask.io.vectors.Feature` per mask (IDs 1..N), polygons in the
    scene's world frame, measures in metres when the scene has a CRS."""
    from terramask.core.maskset import MaskSet
    from terramask.io.vectors import masks_to_features

    feats = []
    for i in range(len(result)):
        (x0, y0), win = result.masks.window(i)
        if win.size == 0:
            win, x0, y0 = np.zeros((1, 1), bool), 0, 0
        one = MaskSet(win[None], result.scores[i : i + 1], transform=transform @ Affine.translation(x0, y0), crs=crs)
        attrs = {
            "id": np.array([i + 1]),
            "predicted_iou": result.scores[i : i + 1],
            "stability_score": result.stability[i : i + 1],
        }
        feats.extend(masks_to_features(one, attrs))
    return feats


# -- the pipeline ----------------------------------------------------------------------------------


def _area_specs(min_area, max_area) -> tuple[AreaSpec | None, AreaSpec | None]:
    lo = None if min_area is None or isinstance(min_area, AreaSpec) else parse_area(min_area, "--min-area")
    hi = None if max_area is None or isinstance(max_area, AreaSpec) else parse_area(max_area, "--max-area")
    return (min_area if isinstance(min_area, AreaSpec) else lo), (max_area if isinstance(max_area, AreaSpec) else hi)


def run_auto(
    scene_path: str | Path,
    backend: Any,
    out_dir: str | Path,
    params: AmgParams | None = None,
    mode: str = "fast",
    *,
    bands: str | tuple[int, ...] | None = None,
    min_area: str | float | AreaSpec | None = None,
    max_area: str | float | AreaSpec | None = None,
    preset: str | None = None,
    model_name: str | None = None,
    max_side: int = MAX_SIDE,
    progress: Callable[[int, int], None] | None = None,
) -> AutoRun:
    """Segment everything in ``scene_path`` with ``backend`` and write the outputs.

    ``params``/``mode`` as :func:`terramask.pipelines.amg.generator.generate_compact`; ``bands``
    1-based display bands (``"4,3,2"``); ``min_area``/``max_area`` size filters
    (``"20m2"``, ``"5ha"``, ``"150px"``, a number = pixels); ``preset`` and
    ``model_name`` are only recorded in the summary. Raises :class:`InputError` for bad
    values and for scenes larger than ``max_side`` pixels on a side.
    """
    from terramask.io.atomic import ensure_output_dir, write_json
    from terramask.io.coco import write_coco_rle
    from terramask.io.overlay import draw_annotations, save_png
    from terramask.io.rasters import write_labels
    from terramask.io.scene import open_scene
    from terramask.io.vectors import write_vector

    t_start = time.perf_counter()
    mode = check_mode(mode)
    params = params or AmgParams()
    lo_spec, hi_spec = _area_specs(min_area, max_area)
    out = ensure_output_dir(out_dir)
    with open_scene(scene_path, bands=bands) as scene:
        if max(scene.width, scene.height) > max_side:
            raise InputError(
                f"{scene.path}: {scene.width}x{scene.height} pixels is larger than {max_side} px on a side; "
                f"segment it in tiles (terramask auto --tile-size 1024, or terramask.pipelines.scene.tiled.run_tiled_auto)"
            )
        shape = (scene.height, scene.width)
        min_px = area_to_pixels(lo_spec, scene.transform, scene.crs, shape, "--min-area")
        max_px = area_to_pixels(hi_spec, scene.transform, scene.crs, shape, "--max-area")
        check_range(min_px, max_px, lo_spec.text if lo_spec else "", hi_spec.text if hi_spec else "")
        t0 = time.perf_counter()
        rgb8 = scene.read_rgb8()
        valid = scene.valid_mask()
        transform, crs = scene.transform, scene.crs
        info = {
            "path": str(scene.path),
            "width": scene.width,
            "height": scene.height,
            "bands": [b + 1 for b in scene.bands],
            "crs": crs,
            "transform": list(transform)[:6],
            "nodata": scene.nodata,
        }
    t_read = time.perf_counter() - t0

    result = generate_compact(backend, rgb8, params, mode, progress=progress)
    n_generated = len(result)
    result = clip_to_valid(result, valid)
    n_valid = len(result)
    # empty masks (possible with stability_score_thresh=0) are no objects
    result = result.subset(np.flatnonzero(area_keep(result.areas, min_px, max_px) & (result.areas > 0)))
    result = sort_by_area(result)
    result.transform, result.crs = transform, crs

    t0 = time.perf_counter()
    paths: dict[str, Path] = {}
    labels = labels_image(result.masks)
    paths["labels.tif"] = write_labels(out / "labels.tif", labels, transform, crs)
    paths["objects.gpkg"] = write_vector(
        out / "objects.gpkg", object_features(result, transform, crs), crs=crs, layer="objects"
    )
    if params.output_mode == "uncompressed_rle":
        paths["masks.json"] = write_json(out / "masks.json", records(result, "uncompressed_rle"), indent=None)
    else:
        paths["masks.json"] = write_coco_rle(out / "masks.json", records(result, "coco_rle"))
    paths["overlay.png"] = save_png(out / "overlay.png", draw_annotations(rgb8, labels))
    t_write = time.perf_counter() - t0
    timings = {"read": t_read, **{k: v for k, v in result.timings.items() if k != "total"}, "write": t_write}
    timings["total"] = time.perf_counter() - t_start
    summary = {
        "count": len(result),
        "scene": info,
        "model": model_name or getattr(backend, "name", type(backend).__name__),
        "mode": mode,
        "preset": preset,
        "parameters": params.to_dict(),
        "filters": {
            "min_area": lo_spec.text if lo_spec else None,
            "max_area": hi_spec.text if hi_spec else None,
            "min_area_px": min_px,
            "max_area_px": max_px,
        },
        "counts": {"generated": n_generated, "after_nodata": n_valid, "after_size_filter": len(result)},
        "timings_s": {k: round(float(v), 4) for k, v in timings.items()},
        "outputs": [*paths, "summary.json"],
    }
    paths["summary.json"] = write_json(out / "summary.json", summary)
    log.info("auto: %d objects from %s in %.1fs -> %s", len(result), info["path"], timings["total"], out)
    return AutoRun(result, paths, summary)
