"""Tiny generated rasters for the io tests, written once per session with rasterio/PIL.

Each fixture returns a :class:`Raster` with the path and the exact pixels written, so tests
compare what terramask reads with what is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up transform with its upper-left corner at ``(west, north)``."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


@dataclass(frozen=True)
class Raster:
    path: str
    pixels: np.ndarray  # (bands, rows, cols) as written
    transform: Affine
    crs: str | None
    nodata: float | None


IDENTITY = Affine.identity()


def _write_tif(path, pixels, crs=None, transform=IDENTITY, nodata=None, **profile) -> Raster:
    count, rows, cols = pixels.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=cols, height=rows, count=count, dtype=pixels.dtype,
        crs=crs, transform=transform, nodata=nodata, **profile,
    ) as ds:
        ds.write(pixels)
    return Raster(str(path), pixels, transform, crs, nodata)


@pytest.fixture(scope="session")
def raster_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rasters")


@pytest.fixture(scope="session")
def rgb_u8(raster_dir) -> Raster:
    """3-band uint8, 20 cols x 16 rows, EPSG:32618 30 m, nodata 0 in the top-left 4x5 block."""
    rng = np.random.default_rng(1)
    px = rng.integers(1, 256, (3, 16, 20), dtype=np.uint8)
    px[:, :4, :5] = 0
    return _write_tif(raster_dir / "rgb_u8.tif", px, "EPSG:32618", from_origin(300000, 4000000, 30, 30), 0)


@pytest.fixture(scope="session")
def ms_u16(raster_dir) -> Raster:
    """4-band uint16, 40 cols x 30 rows, EPSG:32633 10 m, nodata 0 in rows 25.. (all bands).

    Band k holds values spread over a different range so percentiles differ per band."""
    rng = np.random.default_rng(2)
    px = np.stack([rng.integers(100 * (k + 1), 5000 * (k + 1), (30, 40)) for k in range(4)]).astype(np.uint16)
    px[:, 25:, :] = 0
    return _write_tif(raster_dir / "ms_u16.tif", px, "EPSG:32633", from_origin(500000, 5000000, 10, 10), 0)


@pytest.fixture(scope="session")
def float_nan(raster_dir) -> Raster:
    """3-band float32, 24 x 18, EPSG:4326, no nodata value, NaN in a 6x6 block (all bands)."""
    rng = np.random.default_rng(3)
    px = rng.normal(0.2, 0.05, (3, 18, 24)).astype(np.float32)
    px[:, 6:12, 6:12] = np.nan
    return _write_tif(raster_dir / "float_nan.tif", px, "EPSG:4326", from_origin(10.0, 50.0, 0.001, 0.001))


@pytest.fixture(scope="session")
def pan_i16(raster_dir) -> Raster:
    """1-band int16, 30 x 20, negative values, nodata -9999 in the first 3 columns."""
    rng = np.random.default_rng(4)
    px = rng.integers(-500, 1500, (1, 20, 30)).astype(np.int16)
    px[:, :, :3] = -9999
    return _write_tif(raster_dir / "pan_i16.tif", px, "EPSG:32631", from_origin(600000, 5500000, 0.5, 0.5), -9999)


@pytest.fixture(scope="session")
def masked_u16(raster_dir) -> Raster:
    """2-band uint16 without nodata but with an internal mask: the right 8 columns are masked.

    Masked pixels hold a huge value (60000) that would spoil the stretch if counted."""
    rng = np.random.default_rng(5)
    px = rng.integers(1000, 2000, (2, 12, 32)).astype(np.uint16)
    px[:, :, 24:] = 60000
    path = raster_dir / "masked_u16.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=32, height=12, count=2, dtype="uint16",
        crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10),
    ) as ds:
        ds.write(px)
        mask = np.full((12, 32), 255, dtype=np.uint8)
        mask[:, 24:] = 0
        ds.write_mask(mask)
    return Raster(str(path), px, from_origin(500000, 5000000, 10, 10), "EPSG:32633", None)


@pytest.fixture(scope="session")
def wide_u16(raster_dir) -> Raster:
    """1-band uint16 4096 cols x 8 rows: each value appears in two neighbouring columns
    (value = col // 2), so a 2x-decimated read (2048 px) sees every value exactly once per row."""
    cols = np.arange(4096) // 2
    px = np.broadcast_to(cols.astype(np.uint16), (1, 8, 4096)).copy()
    return _write_tif(raster_dir / "wide_u16.tif", px, "EPSG:32633", from_origin(500000, 5000000, 1, 1), None)


@pytest.fixture(scope="session")
def png_rgb(raster_dir) -> Raster:
    """Plain 3-band PNG, 21 x 13 (written with PIL, no georeference)."""
    rng = np.random.default_rng(6)
    hwc = rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)
    path = raster_dir / "plain.png"
    Image.fromarray(hwc).save(path)
    return Raster(str(path), np.moveaxis(hwc, 2, 0).copy(), Affine.identity(), None, None)


@pytest.fixture(scope="session")
def jpeg_rgb(raster_dir) -> Raster:
    """Plain JPEG, 32 x 24 smooth gradient (written with PIL at quality 95); ``pixels`` is the
    array PIL decodes back, which GDAL's decoder should match within a few levels."""
    y, x = np.mgrid[0:24, 0:32]
    hwc = np.stack([x * 7, y * 9, (x + y) * 4], axis=2).astype(np.uint8)
    path = raster_dir / "plain.jpg"
    Image.fromarray(hwc).save(path, quality=95)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    return Raster(str(path), np.moveaxis(decoded, 2, 0).copy(), Affine.identity(), None, None)


@pytest.fixture(scope="session")
def text_tif(raster_dir) -> str:
    path = raster_dir / "notes.tif"
    path.write_text("this is not a raster\n")
    return str(path)


@pytest.fixture(scope="session")
def truncated_tif(raster_dir) -> str:
    """The first half of a valid striped GeoTIFF: the header opens, pixel reads fail."""
    rng = np.random.default_rng(7)
    px = rng.integers(0, 60000, (2, 300, 400)).astype(np.uint16)
    full = _write_tif(raster_dir / "full_for_truncation.tif", px, "EPSG:32633", from_origin(500000, 5000000, 1, 1))
    data = open(full.path, "rb").read()
    path = raster_dir / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return str(path)
