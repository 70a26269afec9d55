"""Tile masks as *parts*: bit-packed crops in scene pixels with the tile edges they touch.

See :mod:`terramask.pipelines.scene.merge` for how parts of neighbouring tiles become
objects. Besides the mask, a part keeps what ``masks.json`` reports of its object: the
scores, the prompt point and the crop box (scene pixels) when the tile segmenter gave them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from terramask.core.errors import InputError
from terramask.core.geometry import Window
from terramask.core.maskset import MaskSet
from terramask.models.concept.base import CLASS_COLUMN
from terramask.pipelines.scene.grid import EDGE_BOTTOM, EDGE_LEFT, EDGE_RIGHT, EDGE_TOP, Box


@dataclass(eq=False)
class Part:
    """One mask of one tile, cropped to its bounding box, in scene pixels.

    ``box`` is ``(x0, y0, x1, y1)`` end exclusive; ``packed`` the crop ``(y1-y0, x1-x0)``
    bool as ``np.packbits`` (C order); ``edges`` the :data:`EDGE_LEFT` … bits of the
    interior tile edges the mask touches; ``index`` its position in the tile's mask set;
    ``id`` is given by :class:`TileMerger` (unique per scene, in tile then index order).
    ``point`` ``(x, y)`` (the prompt) and ``crop_box`` (xyxy, end exclusive: the image
    region the generator looked at) are in scene pixels, None when the segmenter gave none.
    ``cls``: the class of a concept route's instance (``terramask find``; None for
    automatic masks: parts of different classes never merge) and ``class_score`` its
    detector/presence/similarity score (``score`` stays the predicted IoU).
    """

    tile: int
    box: Box
    packed: np.ndarray
    area: int
    score: float
    stability: float
    edges: int
    index: int = 0
    id: int = -1
    conflicts: set = field(default_factory=set)
    point: tuple[float, float] | None = None
    crop_box: Box | None = None
    cls: str | None = None
    class_score: float = float("nan")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.box[3] - self.box[1], self.box[2] - self.box[0])

    @property
    def complete(self) -> bool:
        """The tile saw the whole object (the mask touches no interior tile edge)."""
        return self.edges == 0

    def mask(self) -> np.ndarray:
        """The ``(rows, cols)`` bool crop."""
        h, w = self.shape
        return np.unpackbits(self.packed, count=h * w).reshape(h, w).view(bool)

    @classmethod
    def from_mask(cls, mask: np.ndarray, tile: int, window: Window, interior_edges: int, edge_margin: int,
                  score: float = 1.0, stability: float = float("nan"), index: int = 0, *,
                  point=None, crop_box=None, label: str | None = None,
                  class_score: float = float("nan")) -> "Part | None":
        """A part from an ``(H, W)`` bool mask on the grid of ``window``; None if empty."""
        return cls.from_window(mask, (0, 0), tile, window, interior_edges, edge_margin, score, stability, index,
                               point=point, crop_box=crop_box, label=label, class_score=class_score)

    @classmethod
    def from_window(cls, win: np.ndarray, origin: tuple[int, int], tile: int, window: Window, interior_edges: int,
                    edge_margin: int, score: float = 1.0, stability: float = float("nan"),
                    index: int = 0, *, point=None, crop_box=None, label: str | None = None,
                    class_score: float = float("nan")) -> "Part | None":
        """A part from a bool array ``win`` whose top-left pixel is ``origin`` ``(x, y)`` in
        the grid of ``window`` (a compact mask); None if empty. ``point`` ``(x, y)`` and
        ``crop_box`` (xyxy) are in the grid of ``window`` (default crop: the whole window);
        ``label``/``class_score``: the part's ``cls`` and ``class_score``."""
        win = np.asarray(win, dtype=bool)
        rows = np.flatnonzero(win.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(win[rows[0] : rows[-1] + 1].any(axis=0))
        wy0, wy1, wx0, wx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = win[wy0:wy1, wx0:wx1]
        lx0, ly0 = int(origin[0]) + wx0, int(origin[1]) + wy0
        lx1, ly1 = lx0 + (wx1 - wx0), ly0 + (wy1 - wy0)
        h, w = window.height, window.width
        if lx0 < 0 or ly0 < 0 or lx1 > w or ly1 > h:
            raise InputError(f"tile {tile}: a mask window reaches outside the {w}x{h} tile")
        touch = 0
        touch |= EDGE_LEFT if lx0 < edge_margin else 0
        touch |= EDGE_TOP if ly0 < edge_margin else 0
        touch |= EDGE_RIGHT if lx1 > w - edge_margin else 0
        touch |= EDGE_BOTTOM if ly1 > h - edge_margin else 0
        box = (window.col_off + lx0, window.row_off + ly0, window.col_off + lx1, window.row_off + ly1)
        dx, dy = window.col_off, window.row_off
        scene_point = None if point is None else (float(point[0]) + dx, float(point[1]) + dy)
        cb = (0, 0, w, h) if crop_box is None else tuple(int(v) for v in crop_box)
        scene_crop = (cb[0] + dx, cb[1] + dy, cb[2] + dx, cb[3] + dy)
        return cls(tile=tile, box=box, packed=np.packbits(crop, axis=None), area=int(np.count_nonzero(crop)),
                   score=float(score), stability=float(stability), edges=touch & interior_edges, index=index,
                   point=scene_point, crop_box=scene_crop, cls=label, class_score=float(class_score))


#: A mask losing more than this share of its pixels to nodata is dropped (an artefact of
#: the nodata area, not an object); otherwise it is clipped to the valid pixels.
MAX_NODATA_LOSS = 0.5


def _clip(win: np.ndarray, origin: tuple[int, int], valid: np.ndarray | None) -> np.ndarray | None:
    """``win`` clipped to ``valid`` (the tile's grid); None when it loses too much."""
    if valid is None or win.size == 0:
        return win
    x0, y0 = int(origin[0]), int(origin[1])
    clipped = win & valid[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
    kept = int(np.count_nonzero(clipped))
    if kept < (1.0 - MAX_NODATA_LOSS) * int(np.count_nonzero(win)):
        return None
    return clipped


def parts_from_maskset(maskset: MaskSet, tile: int, window: Window, interior_edges: int, edge_margin: int = 2,
                       valid: np.ndarray | None = None) -> list[Part]:
    """Parts of every non-empty mask of ``maskset`` (on the grid of ``window``).

    ``valid`` (``(H, W)`` bool) clips masks to pixels holding data (masks mostly in
    nodata are dropped, see :data:`MAX_NODATA_LOSS`). Scores come from ``scores``;
    stability from the ``stability_score`` column when present, else NaN; ``point_coords``
    and ``crop_box`` columns (tile pixels) are kept when present. A concept route's mask
    set (a ``class`` column, :data:`CLASS_COLUMN`) gives classed parts: ``scores`` become
    their ``class_score`` and the ``predicted_iou`` column (else ``scores``) their score.
    """
    if maskset.shape != window.shape:
        raise InputError(f"tile {tile}: masks of shape {maskset.shape} do not match the window {window.to_dict()}")
    n = len(maskset)
    stab = maskset["stability_score"] if "stability_score" in maskset else np.full(n, np.nan)
    points = (np.asarray(maskset["point_coords"], dtype=np.float64).reshape(n, -1)[:, :2]
              if "point_coords" in maskset and n else None)
    crops = np.asarray(maskset["crop_box"], dtype=np.int64).reshape(n, 4) if "crop_box" in maskset and n else None
    if CLASS_COLUMN in maskset:
        classes = [str(c) for c in maskset[CLASS_COLUMN]]
        ious = maskset["predicted_iou"] if "predicted_iou" in maskset else maskset.scores
        items: Iterable[tuple] = (
            ((0, 0), maskset.masks[i], float(ious[i]), float(stab[i]), None if points is None else points[i],
             None if crops is None else crops[i], classes[i], float(maskset.scores[i])) for i in range(n))
    else:
        items = (((0, 0), maskset.masks[i], float(maskset.scores[i]), float(stab[i]),
                  None if points is None else points[i], None if crops is None else crops[i]) for i in range(n))
    return parts_from_windows(items, tile, window, interior_edges, edge_margin, valid)


def parts_from_windows(items: Iterable[tuple], tile: int, window: Window, interior_edges: int, edge_margin: int = 2,
                       valid: np.ndarray | None = None) -> list[Part]:
    """Parts of compact masks: ``(origin (x, y), bool window, score, stability[, point,
    crop_box[, class, class_score]])`` items in the grid of ``window`` (e.g. automatic
    generation's packed windows; point ``(x, y)`` and crop box xyxy in that grid too),
    clipped to ``valid`` pixels when given (see :func:`parts_from_maskset`); empty masks
    are skipped."""
    parts = []
    for i, item in enumerate(items):
        origin, win, score, stability = item[:4]
        point, crop_box = (item[4], item[5]) if len(item) > 4 else (None, None)
        label, class_score = (item[6], item[7]) if len(item) > 6 else (None, float("nan"))
        clipped = _clip(np.asarray(win, dtype=bool), origin, valid)
        if clipped is None:
            continue
        part = Part.from_window(clipped, origin, tile, window, interior_edges, edge_margin, score, stability,
                                index=i, point=point, crop_box=crop_box, label=label, class_score=class_score)
        if part is not None:
            parts.append(part)
    return parts
