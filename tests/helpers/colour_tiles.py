"""A 512 x 512 UTM GeoTIFF of red and blue rectangles on grey, cut into 9 tiles of 256 px
(overlap 64), and an exemplar GeoPackage writer: the find tests' tiled scene. The second
red rectangle (300 px wide) is wider than a tile, so it must be merged from pieces."""

from __future__ import annotations

import numpy as np
import pyogrio
import shapely

from helpers.feature_backends import BLUE, GREY, RED
from helpers.scenes import UTM33_TRANSFORM, write_geotiff
from terramask.pipelines.scene.config import SceneRunConfig

SIDE = 512
RED_BOXES = [(24, 24, 72, 64), (100, 300, 400, 340), (400, 60, 448, 100), (80, 400, 128, 440)]
BLUE_BOXES = [(150, 150, 198, 190), (360, 380, 408, 420)]
CONFIG = SceneRunConfig(tile_size=256, overlap=64, progress=False)


def colour_tiles_scene(tmp_path, nodata_cols: int = 0):
    """The scene written to ``tmp_path / "scene.tif"`` (its first ``nodata_cols`` columns nodata)."""
    rng = np.random.default_rng(0)
    img = np.empty((3, SIDE, SIDE), dtype=np.uint8)
    img[:] = np.array(GREY, np.uint8)[:, None, None]
    for boxes, colour in ((RED_BOXES, RED), (BLUE_BOXES, BLUE)):
        for x0, y0, x1, y1 in boxes:
            img[:, y0:y1, x0:x1] = np.array(colour, np.uint8)[:, None, None]
    img = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 1, 255).astype(np.uint8)
    if nodata_cols:
        img[:, :, :nodata_cols] = 0
    return write_geotiff(tmp_path / "scene.tif", img, nodata=0 if nodata_cols else None)


def world_box(x0, y0, x1, y1):
    """The pixel box ``(x0, y0, x1, y1)`` as a polygon in the scene's CRS."""
    t = UTM33_TRANSFORM
    (wx0, wy0), (wx1, wy1) = t @ (x0, y0), t @ (x1, y1)
    return shapely.box(min(wx0, wx1), min(wy0, wy1), max(wx0, wx1), max(wy0, wy1))


def write_exemplars(path, geoms, labels, classes):
    """A GeoPackage of exemplars (EPSG:32633) with ``label`` and ``class`` columns."""
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    pyogrio.raw.write(str(path), wkb, [np.array(labels, dtype=np.int32), np.array(classes, dtype=object)],
                      ["label", "class"], geometry_type="Unknown", crs="EPSG:32633", driver="GPKG")
    return path
