"""Pixel <-> world coordinates through an affine transform (numpy only).

A transform is an :class:`affine.Affine` (the type rasterio uses): ``world = T * (x, y)``
where ``(x, y)`` are scene pixel coordinates (col, row) with ``(0, 0)`` at the
upper-left corner of the upper-left pixel. CRS changes (lon/lat <-> scene CRS) need
pyproj and live in :mod:`terramask.io.crs`.
"""

from __future__ import annotations

import numpy as np
from affine import Affine

FRAMES = ("scene", "world", "lonlat", "tile", "model")


def pixel_to_world(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` pixel ``(x, y)`` -> ``(N, 2)`` world ``(X, Y)``, float64."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return np.stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f], axis=1)


def world_to_pixel(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` world ``(X, Y)`` -> ``(N, 2)`` fractional pixel ``(x, y)``, float64."""
    return pixel_to_world(~transform, xy)


def pixel_size(transform: Affine) -> tuple[float, float]:
    """Ground size of one pixel ``(width, height)`` in CRS units (positive)."""
    return (float(np.hypot(transform.a, transform.d)), float(np.hypot(transform.b, transform.e)))


def pixel_area(transform: Affine) -> float:
    """Area of one pixel in squared CRS units."""
    return abs(transform.a * transform.e - transform.b * transform.d)


def window_transform(transform: Affine, col_off: int, row_off: int) -> Affine:
    """Transform of a window whose upper-left pixel is ``(col_off, row_off)``."""
    return transform @ Affine.translation(col_off, row_off)
