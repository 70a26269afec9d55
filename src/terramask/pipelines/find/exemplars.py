"""Exemplars of a scene -> the images the prototypes are built from.

Each exemplar is read in the tile of the scene's plan that holds it most centrally (so its
features come from the same window, stretch and scale as the tile pass, and a cached
embedding is reused); exemplars sharing a tile share one embedding. Bad input is one
clear line: an exemplar outside the scene, or on nodata (a point on a nodata pixel, a
polygon with more than half its pixels on nodata).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from terramask.core.errors import InputError
from terramask.core.geometry import Tile, Window
from terramask.io.exemplars import ExemplarFeature, check_inside, rasterize, to_scene_pixels
from terramask.io.scene import Scene
from terramask.models.concept.similar import Exemplar, ExemplarImage

#: a polygon losing more than this share of its pixels to nodata is refused
MAX_NODATA_SHARE = 0.5


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
