"""Two overlapping scenes in UTM zones 33 and 34 with a bright field astride the zone
border (18°E at 45°N), for mosaic tests."""

from __future__ import annotations

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

RES = 2.0
FIELD_LONLAT = (17.9985, 45.0, 18.0015, 45.0008)  # a field astride 18°E, the zone 33/34 border


def _scene(path, epsg: int, lon_range: tuple[float, float], field: shapely.Polygon, rng) -> None:
    """A 16-bit scene in ``epsg`` covering ``lon_range`` at 45°N: noise, the field bright."""
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    to_33 = Transformer.from_crs(epsg, 32633, always_xy=True)
    x0, y1 = to_utm.transform(lon_range[0], 45.0012)
    x1, y0 = to_utm.transform(lon_range[1], 44.9996)
    cols, rows = int((x1 - x0) / RES), int((y1 - y0) / RES)
    xs = x0 + (np.arange(cols) + 0.5) * RES
    ys = y1 - (np.arange(rows) + 0.5) * RES
    gx, gy = np.meshgrid(xs, ys)
    wx, wy = to_33.transform(gx, gy)
    inside = shapely.contains_xy(field, wx, wy)
    px = rng.integers(900, 1100, (3, rows, cols)).astype(np.uint16)
    px[:, inside] += 3000
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=3, dtype="uint16",
                       crs=f"EPSG:{epsg}", transform=from_origin(x0, y1, RES, RES)) as dst:
        dst.write(px)


def write_two_zones(tmp_path):
    """``(west (EPSG:32633), east (EPSG:32634), field polygon in EPSG:32633)``."""
    to_33 = Transformer.from_crs(4326, 32633, always_xy=True)
    corners = [to_33.transform(x, y) for x, y in [(FIELD_LONLAT[0], FIELD_LONLAT[1]), (FIELD_LONLAT[2], FIELD_LONLAT[1]),
                                                  (FIELD_LONLAT[2], FIELD_LONLAT[3]), (FIELD_LONLAT[0], FIELD_LONLAT[3])]]
    field = shapely.Polygon(corners)
    rng = np.random.default_rng(11)
    west, east = tmp_path / "west_33.tif", tmp_path / "east_34.tif"
    _scene(west, 32633, (17.996, 18.0005), field, rng)  # ends inside the field
    _scene(east, 32634, (17.9995, 18.004), field, rng)  # starts inside the field (overlap 0.001°)
    return west, east, field
