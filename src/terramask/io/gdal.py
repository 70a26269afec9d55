"""GDAL plumbing shared by the raster readers: one-line error reasons, quiet plain
images, CRS strings and resampling names."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import rasterio.errors
from rasterio.enums import Resampling

from terramask.io.remote import redact

RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
    "mode": Resampling.mode,
}


def gdal_reason(exc: BaseException) -> str:
    """The most specific GDAL message in an exception chain, on one line."""
    messages = []
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if text and "see previous exception" not in text.lower():
            messages.append(text)
        current = current.__cause__ or current.__context__
    return redact(messages[-1]) if messages else type(exc).__name__


@contextmanager
def quiet_georef() -> Iterator[None]:
    """Plain images (PNG/JPEG) have no georeference; that is normal, not a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        yield


def crs_string(crs) -> str | None:
    """rasterio CRS -> ``"EPSG:N"`` when it has an EPSG code, else WKT; ``None`` if absent."""
    if not crs:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()
