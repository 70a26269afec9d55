"""GDAL plumbing shared by the raster readers: opening a scene's dataset wherever it
lives, one-line error reasons, quiet plain images, CRS strings and resampling names."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import rasterio
import rasterio.errors
from rasterio.enums import Resampling

from terramask.core.errors import SceneError, SceneNotFoundError
from terramask.io.remote import (
    configure_gdal,
    display_name,
    gdal_path,
    is_remote,
    is_vrt_xml,
    redact,
    remote_open_error,
)
from terramask.io.stac import is_stac_item, item_vrt

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


def open_dataset(path: str | os.PathLike) -> tuple[Any, str, str]:
    """``(rasterio dataset, source, name)`` of a scene: a local path, a URL or ``/vsi``
    path (GDAL's network options set), a STAC item (opened as the VRT of its default
    assets; ``source`` is then the VRT XML) or VRT XML. ``name`` is what messages show.

    Raises :class:`SceneNotFoundError` (missing file, HTTP 404), :class:`SceneError`
    (a directory, not a raster, access denied …), each one line naming ``name``.
    """
    source = os.fspath(path)
    if is_stac_item(source):
        source = item_vrt(source)
    name = display_name(source)
    remote = is_remote(source) or is_vrt_xml(source)
    if remote:
        configure_gdal()
    elif not Path(source).exists():
        raise SceneNotFoundError(f"{name}: no such file")
    elif Path(source).is_dir():
        raise SceneError(f"{name}: is a directory, not a raster file")
    try:
        with quiet_georef():
            return rasterio.open(gdal_path(source)), source, name
    except rasterio.errors.RasterioError as exc:
        reason = gdal_reason(exc)
        if remote:
            raise remote_open_error(name, reason) from exc
        raise SceneError(f"{name}: cannot open as a raster: {reason}") from exc
