"""Candidates that duplicate objects already in the layer (:mod:`terramask.web.everything`).

"Segment everything" after clicking a few objects finds those objects again; find
similar finds its own examples; a second text search finds what the first one accepted.
Such a candidate is a **duplicate** of a layer object when, in the scene CRS,

- their IoU (intersection over union of the polygons) is at least :data:`DUPLICATE_IOU`
  (the same object, traced a little differently), or
- at least :data:`DUPLICATE_INSIDE` of the candidate's area lies inside the object (a
  part of an object already there: a roof plane of an accepted building).

A candidate *containing* a smaller object is not a duplicate (the object is one part of
something new). Of several layer objects a candidate overlaps, it names the one it has the
highest IoU with. The page hides duplicates unless asked, and bulk accept skips them
(:mod:`terramask.web.everything_routes`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import shapely

from terramask.web.everything_candidates import Candidate

#: IoU with a layer object from which a candidate is the same object.
DUPLICATE_IOU = 0.5
#: Share of a candidate's area inside one layer object from which it is a part of it.
DUPLICATE_INSIDE = 0.8


def duplicate_of(candidates: Sequence[Candidate], objects: Mapping[int, Any]) -> dict[int, int]:
    """``{candidate id: layer object id}`` for the candidates that duplicate an object.

    ``objects``: layer object id -> polygon/multipolygon in the scene CRS (the frame of
    the candidates' ``geometry``). Invalid polygons are repaired (``make_valid``) for the
    comparison only.
    """
    if not candidates or not objects:
        return {}
    ids = np.array(list(objects), dtype=np.int64)
    layer = _valid(np.array(list(objects.values()), dtype=object))
    found = _valid(np.array([c.geometry for c in candidates], dtype=object))
    which, hit = shapely.STRtree(layer).query(found, predicate="intersects")
    if not len(which):
        return {}
    overlap = shapely.area(shapely.intersection(found[which], layer[hit]))
    own = shapely.area(found[which])
    union = own + shapely.area(layer[hit]) - overlap
    iou = overlap / np.maximum(union, 1e-12)
    inside = overlap / np.maximum(own, 1e-12)
    same = (iou >= DUPLICATE_IOU) | (inside >= DUPLICATE_INSIDE)
    best: dict[int, tuple[float, int]] = {}
    for k, obj, score in zip(which[same].tolist(), ids[hit[same]].tolist(), iou[same].tolist(), strict=True):
        if k not in best or score > best[k][0]:
            best[k] = (score, obj)
    return {candidates[k].id: obj for k, (_, obj) in sorted(best.items())}


def _valid(geometries: np.ndarray) -> np.ndarray:
    """``geometries`` with invalid ones replaced by their ``make_valid`` repair."""
    bad = ~shapely.is_valid(geometries)
    if bad.any():
        geometries = geometries.copy()
        geometries[bad] = shapely.make_valid(geometries[bad])
    return geometries
