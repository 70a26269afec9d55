"""GeoTIFFs for remote-read tests: a 20,000 x 20,000 px scene that is small on disk, and
small COGs with objects.

:func:`write_large_scene` writes a tiled (512 px blocks), sparse GeoTIFF (blocks never
written are not stored) with internal overviews: data (incompressible noise) in one
block of every 4 x 4, so the file holds ~100 data blocks (~75 MB) and a window read
touches a small part of it. :data:`DATA_BLOCK_CENTRE` is the centre of a data block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

LARGE = 20_000
BLOCK = 512
STEP = 4
#: scene pixel (x, y) at the centre of a stored data block, away from the scene edges.
DATA_BLOCK_CENTRE = (20 * BLOCK + BLOCK // 2, 20 * BLOCK + BLOCK // 2)


def write_large_scene(path: Path, overviews: tuple[int, ...] = (16, 64)) -> Path:
    """The 20,000² sparse uint8 RGB GeoTIFF (EPSG:32633, 0.5 m pixels) described above."""
    rng = np.random.default_rng(7)
    profile = dict(driver="GTiff", width=LARGE, height=LARGE, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500_000, 4_200_000, 0.5, 0.5), tiled=True, blockxsize=BLOCK,
                   blockysize=BLOCK, sparse_ok=True, photometric="RGB")
    nblocks = LARGE // BLOCK
    with rasterio.open(path, "w", **profile) as dst:
        for by in range(0, nblocks, STEP):
            for bx in range(0, nblocks, STEP):
                dst.write(rng.integers(0, 255, (3, BLOCK, BLOCK), dtype=np.uint8),
                          window=Window(bx * BLOCK, by * BLOCK, BLOCK, BLOCK))
    if overviews:
        with rasterio.Env(SPARSE_OK_OVERVIEW="ON"), rasterio.open(path, "r+") as dst:
            dst.build_overviews(list(overviews), Resampling.nearest)
    return path


def write_cog(path: Path, pixels: np.ndarray, crs: str = "EPSG:32633", origin=(500_000.0, 4_200_000.0),
              res: float = 1.0, nodata: float | None = None, blocksize: int = 256) -> Path:
    """``pixels (bands, rows, cols)`` as a Cloud-Optimized GeoTIFF (DEFLATE, overviews)."""
    bands, rows, cols = pixels.shape
    with rasterio.open(path, "w", driver="COG", width=cols, height=rows, count=bands, dtype=pixels.dtype,
                       crs=crs, transform=from_origin(origin[0], origin[1], res, res), nodata=nodata,
                       blocksize=blocksize, compress="deflate", overview_resampling="nearest") as dst:
        dst.write(pixels)
    return path
