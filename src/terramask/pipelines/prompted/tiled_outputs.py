"""Files of a :class:`~terramask.pipelines.prompted.objects.TiledPrediction`: the same
folder as a single-window ``terramask predict`` (see :mod:`.outputs`), filled window by window.

- ``mask.tif``: the union of every object, on the scene grid; each window's best mask
  written where it was encoded (0 elsewhere, 255 on nodata inside the windows);
- ``candidates.tif`` (two or more objects): band ``k`` is object ``k``, its score in the
  band description;
- ``mask.gpkg`` / ``mask.geojson``: one feature per object (merged across its windows)
  with ``candidate`` (object number), ``score``, ``windows`` and ground measures;
- ``overlay.png``: one panel per window (at most :data:`MAX_PANELS`) with its mask and prompts;
- ``logits.npy``: ``(P, h, w)`` best low-res logits of every part, in ``result.json``
  ``parts`` order (a prior mask belongs to one window, so ``--refine`` does not use them);
- ``result.json``: ``"method": "tiled"``, the objects, their windows and scores.

Memory: one window at a time (each window is read again for its panel, not kept).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from terramask.core.geometry import Window
from terramask.io.atomic import write_json
from terramask.io.gallery import make_gallery
from terramask.io.mask_rasters import candidates_writer, mask_writer
from terramask.io.overlay import draw_prompted, save_png
from terramask.io.scene import Scene
from terramask.io.vectors import Feature, geometry_measures, write_vector
from terramask.pipelines.prompted.folder import output_folder
from terramask.pipelines.prompted.objects import TiledPrediction
from terramask.pipelines.prompted.outputs import (
    METHOD_TILED,
    prompts_document,
    result_document,
    save_logits,
)

log = logging.getLogger(__name__)

#: Windows shown in ``overlay.png`` (the first ones, object by object).
MAX_PANELS = 12


def write_tiled_prediction(result: TiledPrediction, scene: Scene, out_dir) -> dict[str, Path]:
    """Write every output of a tiled prediction into ``out_dir`` as a unit; returns ``{name: path}``."""
    with output_folder(out_dir) as staging:
        names = write_tiled_files(result, scene, staging)
    return {name: Path(out_dir) / name for name in names}


def _parts(result: TiledPrediction):
    """``(object index, window, best mask (h, w) bool, prediction)`` for every part."""
    for k, obj in enumerate(result.objects):
        for part, group in zip(obj.parts, obj.groups, strict=True):
            yield k, group.window, part.best.masks[0], part


def write_tiled_files(result: TiledPrediction, scene: Scene, out: Path) -> list[str]:
    """The files of :func:`write_tiled_prediction`, written straight into the existing folder ``out``."""
    n = len(result.objects)
    names = ["mask.tif"]
    with mask_writer(out / "mask.tif", scene.width, scene.height, scene.transform, scene.crs, nodata=True) as w:
        for _, window, mask, _ in _parts(result):
            w.write_window(window, mask[None], ~scene.valid_mask(window))
    if n > 1:
        with candidates_writer(out / "candidates.tif", scene.width, scene.height, result.scores,
                               scene.transform, scene.crs, nodata=True) as w:
            for k, window, mask, _ in _parts(result):
                bands = np.zeros((n, *mask.shape), dtype=bool)
                bands[k] = mask
                w.write_window(window, bands, ~scene.valid_mask(window))
        names.append("candidates.tif")
    features = [_feature(k, obj, scene) for k, obj in enumerate(result.objects)]
    for name in ("mask.gpkg", "mask.geojson"):
        write_vector(out / name, features, scene.crs, layer="mask")
        names.append(name)
    save_png(out / "overlay.png", _overlay(result, scene))
    names.append("overlay.png")
    logits = np.concatenate([part.best_logits for _, _, _, part in _parts(result)])
    digest = save_logits(out / "logits.npy", logits)
    names += ["logits.npy", "result.json"]
    write_json(out / "result.json", _document(result, scene, names, digest))
    return names


def _feature(k: int, obj, scene: Scene) -> Feature:
    props = {"candidate": k + 1, "score": obj.score, "windows": len(obj.parts)}
    props.update(geometry_measures(obj.geometry, scene.crs, scene.transform))
    return Feature(obj.geometry, props)


def _overlay(result: TiledPrediction, scene: Scene) -> np.ndarray:
    panels: list[np.ndarray] = []
    titles: list[str] = []
    for k, window, mask, part in _parts(result):
        if len(panels) == MAX_PANELS:
            log.info("overlay.png shows the first %d of %d windows", MAX_PANELS, len(result.windows))
            break
        p = part.prompts
        panels.append(draw_prompted(scene.read_rgb8(window), mask, p.points, p.labels, p.boxes))
        titles.append(f"Object {k + 1}, Score: {float(part.best.scores[0]):.3f}, at x {window.col_off} y {window.row_off}")
    return make_gallery(panels, cols=min(4, len(panels)), thumb=512, titles=titles)


def _bounds(windows: list[Window]) -> Window:
    b = np.array([w.bounds for w in windows])
    return Window.from_bounds(int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))


def _document(result: TiledPrediction, scene: Scene, names: list[str], digest: str) -> dict:
    objects = []
    for k, obj in enumerate(result.objects):
        geom = obj.geometry_px
        objects.append({
            "candidate": k + 1,
            "score": obj.score,
            "area_px": int(round(geom.area)) if geom is not None else 0,
            "box_xyxy_scene_px": list(geom.bounds) if geom is not None else None,
            "windows": [w.to_dict() for w in obj.windows],
            "window_scores": obj.scores,
        })
    parts = [{"candidate": k + 1, "window": window.to_dict(), "score": float(part.best.scores[0])}
             for k, window, _, part in _parts(result)]
    return result_document(scene, result.model, METHOD_TILED, result.windows, names, digest) | {
        "window": _bounds(result.windows).to_dict(),
        "mask": "union of the objects" if len(objects) > 1 else "the object, merged across its windows",
        "prompts": prompts_document(result.prompts, False),
        "candidates": objects,
        "parts": parts,
        "timings": result.timings,
    }
