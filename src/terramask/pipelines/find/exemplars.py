"""Exemplars of a scene -> the images the prototypes are built from.

For find-similar, each exemplar is read in the tile of the scene's plan that holds it most centrally (so its
features come from the same window, stretch and scale as the tile pass, and a cached
embedding is reused); exemplars sharing a tile share one embedding. Bad input is one
clear line: an exemplar outside the scene, or on nodata (a point on a nodata pixel, a
polygon with more than half its pixels on nodata). For SAM 3, which reads example boxes
itself, :class:`SceneBoxes` hands each tile the exemplar boxes lying in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from affine import Affine

from terramask.core.errors import InputError
from terramask.core.geometry import Tile, Window
from terramask.core.image import GeoImage
from terramask.io.exemplars import ExemplarFeature, check_inside, rasterize, to_scene_pixels
from terramask.io.scene import Scene
from terramask.models.concept.base import ConceptQuery
from terramask.models.concept.similar import Exemplar, ExemplarImage

#: a polygon losing more than this share of its pixels to nodata is refused
MAX_NODATA_SHARE = 0.5
#: an exemplar box counts in a tile when this share of its area lies inside it
MIN_BOX_SHARE = 0.5


def _centrality(box: tuple[float, float, float, float], window: Window) -> float:
    """Smallest distance (pixels) from the box to the window's edges; negative when the
    box reaches outside the window."""
    x0, y0, x1, y1 = box
    wx0, wy0, wx1, wy1 = window.bounds
    return min(x0 - wx0, y0 - wy0, wx1 - x1, wy1 - y1)


def home_tile(box: tuple[float, float, float, float], tiles: Sequence[Tile]) -> int:
    """Index of the tile whose window holds ``box`` (scene pixels, xyxy) most centrally."""
    return max(range(len(tiles)), key=lambda i: (_centrality(box, tiles[i].window), -i))


def _exemplar_in(feature: ExemplarFeature, window: Window, valid: np.ndarray, scene: str) -> Exemplar:
    """The exemplar in the tile ``window`` (tile pixels), checked against nodata."""
    if feature.is_point:
        x, y = feature.geometry.x - window.col_off, feature.geometry.y - window.row_off
        col = min(max(int(np.floor(x)), 0), window.width - 1)
        row = min(max(int(np.floor(y)), 0), window.height - 1)
        if not valid[row, col]:
            raise InputError(f"{feature.where} lies on nodata in {scene} (pixel column {col + window.col_off}, "
                             f"row {row + window.row_off})")
        return Exemplar(label=feature.label, cls=feature.cls, point=(float(x), float(y)), where=feature.where)
    mask = rasterize(feature, window)
    total = int(mask.sum())
    mask &= valid
    if total == 0 or mask.sum() < (1.0 - MAX_NODATA_SHARE) * total:
        raise InputError(f"{feature.where} lies on nodata in {scene} ({total - int(mask.sum())} of its {total} "
                         "pixels hold no data)")
    return Exemplar(label=feature.label, cls=feature.cls, mask=mask, where=feature.where)


def exemplar_images(scene: Scene, tiles: Sequence[Tile], features: Sequence[ExemplarFeature]) -> list[ExemplarImage]:
    """One :class:`ExemplarImage` per tile holding exemplars (features in the scene CRS,
    or scene pixels for a scene without one), read with the scene-wide stretch."""
    transform = scene.transform if scene.crs is not None else None
    groups: dict[int, list[ExemplarFeature]] = defaultdict(list)
    for feature in features:
        px = to_scene_pixels(feature, transform)
        check_inside(px, scene.width, scene.height, scene.path)
        groups[home_tile(px.geometry.bounds, tiles)].append(px)
    images = []
    for seq in sorted(groups):
        window = tiles[seq].window
        image = scene.read(window)
        valid = scene.valid_mask(window)
        exemplars = [_exemplar_in(f, window, valid, scene.path) for f in groups[seq]]
        images.append(ExemplarImage(image, exemplars, valid))
    return images


@dataclass(frozen=True)
class SceneBoxes:
    """Exemplar boxes of a scene for a route that reads boxes (SAM 3), handed to each tile.

    ``boxes``: ``(N, 4)`` float64 xyxy scene pixels (each exemplar polygon's bounds);
    ``labels``: ``(N,)`` int64 (1 example, 0 counter-example); ``classes``: the class of
    each; ``transform``: the scene's (scene pixels -> the tiles' frame). SAM 3's example
    boxes are image-local: a tile gets the boxes lying mostly (:data:`MIN_BOX_SHARE` of
    their area) inside it, in its own pixels.
    """

    boxes: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    transform: Affine

    @classmethod
    def from_features(cls, scene: Scene, features: Sequence[ExemplarFeature]) -> "SceneBoxes":
        """The boxes of ``features`` (scene CRS) in ``scene``; points are refused (SAM 3 takes boxes)."""
        transform = scene.transform if scene.crs is not None else None
        boxes = []
        for feature in features:
            if feature.is_point:
                raise InputError(f"{feature.where} is a point; SAM 3 takes example boxes: outline the object "
                                 "with a polygon (its bounding box is used)")
            px = to_scene_pixels(feature, transform)
            check_inside(px, scene.width, scene.height, scene.path)
            boxes.append(px.geometry.bounds)
        return cls(np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                   np.array([f.label for f in features], dtype=np.int64),
                   tuple(f.cls for f in features), scene.transform)

    def in_tile(self, image: GeoImage) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """``(boxes (K, 4) tile pixels, labels (K,), classes)`` of the exemplars in ``image``."""
        rows, cols = image.shape
        to_tile = ~image.transform @ self.transform
        xs = np.stack([self.boxes[:, 0], self.boxes[:, 2], self.boxes[:, 0], self.boxes[:, 2]], axis=1)
        ys = np.stack([self.boxes[:, 1], self.boxes[:, 1], self.boxes[:, 3], self.boxes[:, 3]], axis=1)
        tx = to_tile.a * xs + to_tile.b * ys + to_tile.c
        ty = to_tile.d * xs + to_tile.e * ys + to_tile.f
        tile = np.stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)], axis=1)
        clipped = tile.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, cols)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, rows)
        area = (tile[:, 2] - tile[:, 0]) * (tile[:, 3] - tile[:, 1])
        inside = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
        keep = (area > 0) & (inside >= MIN_BOX_SHARE * area)
        return clipped[keep], self.labels[keep], tuple(c for c, k in zip(self.classes, keep, strict=True) if k)

    def query_for(self, image: GeoImage, query: ConceptQuery) -> ConceptQuery:
        """``query`` with the exemplar boxes lying in ``image`` (its phrases unchanged)."""
        boxes, labels, classes = self.in_tile(image)
        return ConceptQuery(phrases=query.phrases, classes=dict(query.classes), exemplar_boxes=boxes,
                            exemplar_labels=labels, exemplar_classes=classes)
