"""Candidate objects of a segment-everything job (:mod:`terramask.web.everything`).

A candidate is one automatic mask made into a polygon: ``geometry`` in the scene CRS
(world frame of the scene transform), the mask's predicted IoU as ``score``, its
``stability``, its pixel count ``area_px`` and ground area ``area_m2`` (``None``
without ground units), and ``cls``: the class a text or find-similar job proposes (the
phrase, or the example's class; ``None`` for segment everything). Candidates come from the masks of one window
(:func:`from_masks`) or from the files of a tiled scene run (:func:`from_scene_run`),
and are sent to the page with outlines in scene pixels (:func:`candidate_payload`).
Accepting one copies its polygon into the object layer; nothing is traced again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import shapely
import shapely.affinity
from affine import Affine

from terramask.core.maskset import MaskSet
from terramask.io.features import mask_to_geometry
from terramask.models.concept.base import CLASS_COLUMN
from terramask.pipelines.amg.generator import AmgResult
from terramask.pipelines.scene.run import SceneRun
from terramask.pipelines.scene.sink import MASKS_NAME
from terramask.web.measures import PixelArea

#: Outline simplification for drawing (scene pixels; the layer keeps the exact polygons).
OUTLINE_TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Candidate:
    """One automatic object; ``geometry`` is a shapely polygon/multipolygon in the scene CRS."""

    id: int
    geometry: Any
    score: float
    stability: float
    area_px: int
    area_m2: float | None
    cls: str | None = None


Item = tuple[Any, float, float, int, float | None, str | None]


def _ranked(items: list[Item]) -> list[Candidate]:
    """Candidates numbered 1..N, best score first (ties: larger first)."""
    items.sort(key=lambda t: (-t[1], -t[3]))
    return [Candidate(k + 1, g, s, st, a, m2, c) for k, (g, s, st, a, m2, c) in enumerate(items)]


def from_masks(masks: AmgResult | MaskSet, check: Callable[[], None]) -> list[Candidate]:
    """Candidates of automatic masks on one grid (``masks.transform``/``crs``: the
    window's). Each mask is traced inside its own box; ``check()`` runs before each, so a
    cancelled job stops between masks. Empty masks are dropped. A ``class`` column
    (concept routes) becomes each candidate's ``cls``."""
    result = masks if isinstance(masks, AmgResult) else AmgResult.from_maskset(masks)
    classes = result.extras.get(CLASS_COLUMN)
    transform = result.transform or Affine.identity()
    measure = PixelArea(result.crs, transform)
    items: list[Item] = []
    for i in range(len(result)):
        check()
        (x0, y0), win = result.masks.window(i)
        count = int(win.sum()) if win.size else 0
        if count == 0:
            continue
        geometry = mask_to_geometry(win, transform @ Affine.translation(x0, y0))
        area_m2 = measure.area_m2(count, x0 + win.shape[1] / 2, y0 + win.shape[0] / 2)
        cls = None if classes is None or classes[i] is None else str(classes[i])
        items.append((geometry, float(result.scores[i]), float(result.stability[i]), count, area_m2, cls))
    return _ranked(items)


def from_scene_run(run: SceneRun) -> list[Candidate]:
    """Candidates from a finished :func:`~terramask.pipelines.scene.run.run_scene`:
    polygons, scores and classes (a classed run's) from its objects file, pixel counts
    from ``masks.json``."""
    import pyogrio.raw

    objects = next(p for name, p in run.paths.items() if name.startswith("objects"))
    meta, _, wkbs, fields = pyogrio.raw.read(objects, layer="objects")
    columns = dict(zip((str(n) for n in meta["fields"]), fields, strict=True))
    records = json.loads(Path(run.paths[MASKS_NAME]).read_text(encoding="utf-8"))
    areas = [int(r["area"]) for r in records]  # in ID order, IDs 1..N
    items: list[Item] = []
    for k, wkb in enumerate(wkbs):
        object_id = int(columns["id"][k])
        area_m2 = columns.get("area_m2")
        m2 = None if area_m2 is None or not np.isfinite(area_m2[k]) else float(area_m2[k])
        cls = columns.get("class")
        name = None if cls is None or cls[k] is None else str(cls[k])
        score = columns["score"][k] if "score" in columns else np.nan  # classed runs: detector/similarity
        score = score if np.isfinite(score) else columns["predicted_iou"][k]
        items.append((shapely.from_wkb(wkb), float(score), float(columns["stability_score"][k]),
                      areas[object_id - 1], m2, name))
    return _ranked(items)


def outline_px(geometry: Any, transform: Affine) -> list[list[list[float]]]:
    """Rings (exteriors and holes) of ``geometry`` (scene CRS) in scene pixels, simplified
    by :data:`OUTLINE_TOLERANCE_PX`, coordinates rounded to 0.01 px."""
    inv = ~transform
    pixels = shapely.affinity.affine_transform(geometry, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    pixels = shapely.simplify(pixels, OUTLINE_TOLERANCE_PX, preserve_topology=True)
    rings: list[list[list[float]]] = []
    for poly in getattr(pixels, "geoms", [pixels]):
        for ring in [poly.exterior, *poly.interiors]:
            rings.append([[round(x, 2), round(y, 2)] for x, y in ring.coords])
    return rings


def candidate_payload(candidate: Candidate, state: str, transform: Affine,
                      class_ids: dict[str, int] | None = None, duplicate_of: int | None = None) -> dict:
    """One candidate for the page: ``id``, ``state`` (open/accepted/discarded), ``score``,
    ``stability``, ``area_px``, ``area_m2``, ``bbox_px`` (xyxy) and ``outline_px`` (rings),
    both in scene pixels of the grid ``transform``; ``class`` (the proposed class name or
    ``None``) and ``class_id``: the layer class of that name (``class_ids``: lower-case
    name -> id), ``None`` when the layer has none; ``duplicate_of``: the id of the layer
    object it duplicates (:mod:`terramask.web.everything_duplicates`) or ``None``."""
    rings = outline_px(candidate.geometry, transform)
    xs = [x for ring in rings for x, _ in ring]
    ys = [y for ring in rings for _, y in ring]
    return {
        "id": candidate.id, "state": state, "score": round(candidate.score, 4),
        "stability": round(candidate.stability, 4), "area_px": candidate.area_px, "area_m2": candidate.area_m2,
        "bbox_px": [min(xs), min(ys), max(xs), max(ys)], "outline_px": rings, "class": candidate.cls,
        "class_id": None if candidate.cls is None else (class_ids or {}).get(candidate.cls.lower()),
        "duplicate_of": duplicate_of,
    }
