from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine


def write_geotiff(path, pixels: np.ndarray, crs="EPSG:32633", transform=None, nodata=None):
    """Write ``(bands, rows, cols)`` pixels as a GeoTIFF; returns the path."""
    bands, rows, cols = pixels.shape
    transform = transform or Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)
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


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    from helpers.tiny_sam import write_sam_checkpoint

    return write_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth", arch="tiny", seed=0)


@pytest.fixture()
def blob_tif(tmp_path):
    return write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)
