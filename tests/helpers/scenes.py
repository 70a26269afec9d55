"""Tiny generated GeoTIFF scenes for pipeline and CLI tests."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine

UTM33_TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)


def write_geotiff(path, pixels: np.ndarray, crs="EPSG:32633", transform=None, nodata=None):
    """Write ``(bands, rows, cols)`` pixels as a GeoTIFF; returns the path."""
    bands, rows, cols = pixels.shape
    transform = transform or UTM33_TRANSFORM
    with rasterio.open(
        path, "w", driver="GTiff", width=cols, height=rows, count=bands, dtype=pixels.dtype,
        crs=crs, transform=transform, nodata=nodata,
    ) as dst:
        dst.write(pixels)
    return path


def blob_scene(rows=256, cols=320, dtype=np.uint16, seed=0) -> np.ndarray:
    """3-band scene: bright rectangle (rows 60-140, cols 80-200) on a noisy dark ground;
    the left 20 columns are nodata (0)."""
    rng = np.random.default_rng(seed)
    px = rng.integers(900, 1100, size=(3, rows, cols)).astype(dtype)
    px[:, 60:140, 80:200] += 3000
    px[:, :, :20] = 0
    return px
