"""Prompts on objects larger than one tile: several native-resolution windows, one polygon.

:class:`~terramask.pipelines.prompted.predict.ScenePrompter` answers prompts that fit in one
window. A field, lake or runway larger than a tile gets prompts in several places;
encoding one window around all of them would downsample it. Here the prompts are split
into groups that each fit in a ``window_size`` window at native resolution, each group is
predicted in its own window (the embedding of each window is cached by the prompter), and
the best masks are merged into one polygon:

- object points (label 1) are grouped on a grid of ``window_size - 2 * margin`` cells;
- a box larger than a cell is cut into equal sub-boxes, one group each (object points
  inside a sub-box join it);
- background points (label 0) join every group whose window contains them;
- the result is the union of the groups' best masks: a ``Polygon`` (or ``MultiPolygon``
  when the windows do not meet) in scene pixels and in the scene CRS.

Prompts that fit in one window (or scenes small enough to be encoded whole) give one group,
exactly what ``ScenePrompter.predict`` gives. ``ScenePrompter.segment`` and ``terramask
predict`` route prompts here (one object at a time, :mod:`.objects`); the files are
written by :mod:`.tiled_outputs`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from shapely.geometry.base import BaseGeometry

from terramask.core.errors import InputError, PromptError
from terramask.core.frames import window_transform
from terramask.core.geometry import Window
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.io.vectors import Feature, geometry_measures, mask_to_geometry
from terramask.pipelines.prompted.predict import MARGIN, ScenePrompter
from terramask.pipelines.prompted.session import Prediction, prompt_window

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PromptGroup:
    """Prompts (scene pixels) predicted together in ``window``."""

    window: Window
    prompts: Prompts


def _box_pieces(box: np.ndarray, cell: int) -> list[np.ndarray]:
    x0, y0, x1, y1 = (float(v) for v in box)
    nx, ny = max(1, math.ceil((x1 - x0) / cell)), max(1, math.ceil((y1 - y0) / cell))
    xs, ys = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
    return [np.array([xs[i], ys[j], xs[i + 1], ys[j + 1]]) for j in range(ny) for i in range(nx)]


def plan_prompt_windows(prompts: Prompts, width: int, height: int, window_size: int,
                        margin: int = MARGIN) -> list[PromptGroup]:
    """Split scene-pixel ``prompts`` into groups that each fit in one window (see module)."""
    if prompts.frame != "scene":
        raise PromptError(f"prompts must be in scene pixels here, got frame {prompts.frame!r}")
    if window_size <= 2 * margin:
        raise InputError(f"window size {window_size} must exceed twice the margin ({margin} px)")
    pts, labels, boxes = prompts.points, prompts.labels, prompts.boxes
    if len(pts) == 0 and len(boxes) == 0:
        raise PromptError("give at least one point or box")
    xs = np.concatenate([pts[:, 0], boxes[:, 0], boxes[:, 2]])
    ys = np.concatenate([pts[:, 1], boxes[:, 1], boxes[:, 3]])
    if xs.max() - xs.min() + 2 * margin <= window_size and ys.max() - ys.min() + 2 * margin <= window_size:
        return [PromptGroup(prompt_window(prompts, width, height, window_size, margin), prompts)]
    if prompts.mask_logits is not None:
        raise PromptError("a prior mask belongs to one window; prompts spanning several windows cannot use it")
    cell = window_size - 2 * margin
    obj = pts[labels == 1]
    background = pts[labels == 0]
    used = np.zeros(len(obj), dtype=bool)
    groups: list[tuple[np.ndarray, np.ndarray]] = []  # (object points, boxes)
    for box in boxes:
        for piece in _box_pieces(box, cell):
            inside = (~used & (obj[:, 0] >= piece[0]) & (obj[:, 0] <= piece[2])
                      & (obj[:, 1] >= piece[1]) & (obj[:, 1] <= piece[3]))
            used |= inside
            groups.append((obj[inside], piece[None]))
    rest = obj[~used]
    if len(rest):
        x0, y0 = rest[:, 0].min(), rest[:, 1].min()
        cells = np.stack([np.floor((rest[:, 0] - x0) / cell), np.floor((rest[:, 1] - y0) / cell)], axis=1).astype(int)
        for key in sorted({tuple(c) for c in cells.tolist()}, key=lambda c: (c[1], c[0])):
            sel = np.all(cells == key, axis=1)
            groups.append((rest[sel], np.zeros((0, 4))))
    if not groups:
        raise PromptError("background points alone do not mark an object; add an object point or a box")
    out = []
    for g_points, g_boxes in groups:
        seed = Prompts(points=g_points, labels=np.ones(len(g_points), dtype=np.int64), boxes=g_boxes)
        window = prompt_window(seed, width, height, window_size, margin)
        x0, y0, x1, y1 = window.bounds
        bg = background[(background[:, 0] >= x0) & (background[:, 0] < x1)
                        & (background[:, 1] >= y0) & (background[:, 1] < y1)]
        group = Prompts(points=np.concatenate([g_points, bg]),
                        labels=np.concatenate([np.ones(len(g_points), np.int64), np.zeros(len(bg), np.int64)]),
                        boxes=g_boxes, frame="scene")
        out.append(PromptGroup(window, group))
    return out


@dataclass(frozen=True)
class MergedPrediction:
    """One object assembled from the best masks of several windows.

    ``geometry_px``: union polygon in scene pixels (x=col, y=row); ``geometry``: the same in
    the scene CRS (``transform``/``crs``); ``parts``: one :class:`Prediction` per window
    (candidates on that window's grid); ``score``: the parts' best scores averaged with
    their mask areas as weights.
    """

    geometry_px: BaseGeometry | None
    geometry: BaseGeometry | None
    parts: list[Prediction]
    groups: list[PromptGroup]
    transform: Affine
    crs: str | None
    scores: list[float] = field(default_factory=list)

    @property
    def windows(self) -> list[Window]:
        return [g.window for g in self.groups]

    @property
    def score(self) -> float:
        areas = np.array([float(p.best.areas[0]) for p in self.parts])
        if areas.sum() == 0:
            return float(np.mean(self.scores)) if self.scores else 0.0
        return float(np.average(self.scores, weights=areas))

    @property
    def window(self) -> Window:
        """The scene window holding every part."""
        b = np.array([w.bounds for w in self.windows])
        return Window.from_bounds(int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))

    def to_maskset(self, max_pixels: int = 64_000_000) -> MaskSet:
        """The merged mask on the grid of :attr:`window` (one mask; transform of that window)."""
        win = self.window
        if win.area > max_pixels:
            raise InputError(f"the merged object spans {win.width}x{win.height} px, more than {max_pixels} px to hold as a mask")
        mask = np.zeros(win.shape, dtype=bool)
        for part, group in zip(self.parts, self.groups, strict=True):
            w = group.window
            mask[w.row_off - win.row_off : w.row_off - win.row_off + w.height,
                 w.col_off - win.col_off : w.col_off - win.col_off + w.width] |= part.best.masks[0]
        return MaskSet(mask[None], np.array([self.score], dtype=np.float32),
                       transform=window_transform(self.transform, win.col_off, win.row_off), crs=self.crs)

    def feature(self) -> Feature:
        """The object as a :class:`Feature` in the scene CRS with score, window count and measures."""
        props = {"score": self.score, "windows": len(self.parts)}
        props.update(geometry_measures(self.geometry, self.crs, self.transform))
        return Feature(self.geometry, props)

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "scores": self.scores,
            "windows": [w.to_dict() for w in self.windows],
            "prompts": [g.prompts.to_dict() for g in self.groups],
            "bounds_px": list(self.geometry_px.bounds) if self.geometry_px is not None else None,
            "crs": self.crs,
        }


def segment_across_tiles(prompter: ScenePrompter, prompts: Prompts, *, window_size: int | None = None,
                         margin: int = MARGIN, multimask: bool = True) -> MergedPrediction:
    """Segment the one object marked by ``prompts`` (any frame), however large.

    Each group of prompts (:func:`plan_prompt_windows`) is predicted in its own native
    resolution window through ``prompter``; the best candidates are merged. Scenes that
    the prompter encodes whole give a single group.
    """
    scene = prompter.scene
    pixel = prompter.to_pixels(prompts)
    size = int(window_size or prompter.window_size)
    if max(scene.width, scene.height) <= prompter.full_scene_max:
        groups = [PromptGroup(scene.window, pixel)]
    else:
        groups = plan_prompt_windows(pixel, scene.width, scene.height, size, margin)
    parts, geoms, scores = [], [], []
    for group in groups:
        pred = prompter.predict(replace(group.prompts, frame="scene"), multimask=multimask, window=group.window)
        best = pred.best
        parts.append(pred)
        scores.append(float(best.scores[0]))
        w = group.window
        geom = mask_to_geometry(best.masks[0], Affine.translation(w.col_off, w.row_off))
        if geom is not None:
            geoms.append(geom)
    log.info("%s: object from %d window(s)", scene.path, len(groups))
    geometry_px = None if not geoms else (geoms[0] if len(geoms) == 1 else shapely.union_all(geoms))
    if geometry_px is not None and not geometry_px.is_valid:
        geometry_px = shapely.make_valid(geometry_px)
    t = scene.transform
    geometry = None if geometry_px is None else shapely.affinity.affine_transform(
        geometry_px, [t.a, t.b, t.d, t.e, t.c, t.f])
    return MergedPrediction(geometry_px, geometry, parts, groups, t, scene.crs, scores)
