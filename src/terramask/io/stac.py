"""STAC Items as scenes: the chosen assets combined as the bands of one virtual raster.

A SCENE that is a STAC Item (a local ``.json``/``.geojson`` file, or an ``http(s)`` URL
ending so or holding ``/items/``) is parsed with ``pystac``; its assets are chosen by
``--assets`` (:func:`choose_assets`):

- asset keys (``red,green,blue``, ``B04,B03,B02``, ``visual``), or
- common band names (``red``, ``nir`` …) found in the assets' ``eo:bands`` (STAC 1.0) or
  ``bands``/``eo:common_name`` (STAC 1.1),

by default ``visual`` when the item has it, else ``red,green,blue``. The assets become
the bands of one GDAL VRT (:func:`item_vrt`) whose sources are the assets where they
live (``/vsicurl/`` for URLs, :mod:`terramask.io.remote`): nothing is downloaded, window
reads fetch the blocks they need from each asset. The VRT's grid is the finest
resolution among the assets over the first asset's extent (coarser assets, e.g. 20 m
Sentinel-2 bands with 10 m ones, are resampled by GDAL with ``nearest``); all assets must
share one CRS.

The VRT is an XML string that :func:`terramask.io.scene.open_scene` opens like a file
name, and that workers receive instead of a path (cheap to pickle, no second fetch of the
item). It carries, in its ``terramask`` metadata domain, the display ``name`` (the item's
URL without query string, ``#`` and the asset keys) and ``stac`` (JSON: item id,
collection, datetime, properties, asset keys), which ``summary.json`` reports.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from terramask.core.errors import InputError, SceneError, SceneNotFoundError
from terramask.core.lazy import require
from terramask.io.remote import configure_gdal, display_name, gdal_path, is_remote, redact

ITEM_SUFFIXES = (".json", ".geojson")
DEFAULT_ASSETS = ("visual", "red,green,blue")
METADATA_DOMAIN = "terramask"

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def is_stac_item(path: str | os.PathLike) -> bool:
    """True for a ``.json``/``.geojson`` path or URL, or a URL whose path holds ``/items/``."""
    text = os.fspath(path)
    if text.lstrip().startswith("<"):
        return False
    route = urlsplit(text).path if "://" in text else text
    return route.lower().endswith(ITEM_SUFFIXES) or ("://" in text and "/items/" in route)


@dataclass(frozen=True)
class ChosenAsset:
    """One asset of the item that becomes bands of the scene: ``key``, absolute ``href``,
    and ``band`` (1-based band of a multi-band asset given by its common name, else None = all)."""

    key: str
    href: str
    band: int | None = None


def load_item(path: str | os.PathLike) -> Any:
    """The ``pystac.Item`` at ``path`` (file or URL); one clear error when it cannot be read."""
    pystac = require("pystac", "stac")
    text = os.fspath(path)
    name = display_name(text)
    if not is_remote(text) and not Path(text).is_file():
        raise SceneNotFoundError(f"{name}: no such file")
    try:
        obj = pystac.read_file(text)
    except FileNotFoundError as exc:
        raise SceneNotFoundError(f"{name}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise SceneError(f"{name}: not a STAC item (not JSON: {exc.msg})") from exc
    except Exception as exc:  # urllib's HTTPError/URLError, pystac's STACError, bad fields
        status = _http_status(exc)
        if status == 404:
            raise SceneNotFoundError(f"{name}: not found on the server (HTTP 404)") from exc
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SceneError(f"{name}: cannot read the STAC item: {redact(reason)}") from exc
    if not isinstance(obj, pystac.Item):
        raise SceneError(f"{name}: is a STAC {type(obj).__name__}, not an Item; give one item of it")
    return obj


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status in an exception chain (pystac wraps urllib's HTTPError)."""
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            return None
        code = getattr(current, "code", None)
        if isinstance(code, int):
            return code
        current = current.__cause__ or current.__context__
    return None


def _common_names(asset: Any) -> list[str]:
    fields = asset.extra_fields
    bands = fields.get("eo:bands") or fields.get("bands") or []
    return [str(b.get("common_name") or b.get("eo:common_name") or "").lower() for b in bands]


def choose_assets(item: Any, spec: str | None) -> list[ChosenAsset]:
    """The assets named by ``spec`` (comma-separated keys or common band names; ``None``:
    :data:`DEFAULT_ASSETS`). Raises :class:`InputError` naming what the item offers."""
    if spec is None:
        spec = next((s for s in DEFAULT_ASSETS if all(_find(item, n) for n in s.split(","))), DEFAULT_ASSETS[-1])
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--assets is empty; give asset keys or band names, e.g. red,green,blue or visual")
    chosen = []
    for name in names:
        found = _find(item, name)
        if found is None:
            offered = ", ".join(sorted(item.assets)) or "none"
            raise InputError(f"the STAC item {item.id} has no asset or band {name!r}; its assets: {offered}")
        chosen.append(found)
    return chosen


def _find(item: Any, name: str) -> ChosenAsset | None:
    asset = item.assets.get(name)
    if asset is not None:
        return ChosenAsset(name, asset.get_absolute_href() or asset.href)
    for key, candidate in item.assets.items():
        common = _common_names(candidate)
        if name.lower() in common:
            band = common.index(name.lower()) + 1 if len(common) > 1 else None
            return ChosenAsset(key, candidate.get_absolute_href() or candidate.href, band)
    return None


@dataclass
class _Source:
    asset: ChosenAsset
    width: int
    height: int
    transform: Any
    crs: Any
    dtypes: tuple[str, ...]
    nodata: float | None


def _describe(asset: ChosenAsset, item_name: str) -> _Source:
    import rasterio
    import rasterio.errors

    if is_remote(asset.href):
        configure_gdal()
    try:
        with rasterio.open(gdal_path(asset.href)) as ds:
            return _Source(asset, ds.width, ds.height, ds.transform, ds.crs, tuple(ds.dtypes), ds.nodata)
    except rasterio.errors.RasterioError as exc:
        from terramask.io.gdal import gdal_reason
        from terramask.io.remote import remote_open_error

        shown = f"{item_name}: asset {asset.key} ({display_name(asset.href)})"
        raise remote_open_error(shown, gdal_reason(exc)) from exc


def item_vrt(path: str | os.PathLike, assets: str | None = None) -> str:
    """VRT XML of the STAC item at ``path`` with ``assets`` as its bands (module docstring)."""
    item = load_item(path)
    item_name = display_name(os.fspath(path))
    chosen = choose_assets(item, assets)
    sources = [_describe(a, item_name) for a in chosen]
    crs = {s.crs.to_string() if s.crs else None for s in sources}
    if len(crs) > 1:
        raise SceneError(f"{item_name}: the assets {', '.join(a.key for a in chosen)} are in different CRS ({crs}); "
                         "choose assets of one CRS")
    first = sources[0]
    res = min(abs(s.transform.a) for s in sources)
    left, top = first.transform.c, first.transform.f
    width = max(1, int(round(first.width * abs(first.transform.a) / res)))
    height = max(1, int(round(first.height * abs(first.transform.e) / res)))
    dtype = np.result_type(*[np.dtype(d) for s in sources for d in s.dtypes]).name
    bands_xml: list[str] = []
    for src in sources:
        bands = [src.asset.band] if src.asset.band else list(range(1, len(src.dtypes) + 1))
        for b in bands:
            bands_xml.append(_band_xml(len(bands_xml) + 1, src, b, dtype, (left, top, res), (width, height)))
    metadata = {"id": item.id, "collection": item.collection_id,
                "datetime": item.datetime.isoformat() if item.datetime else None,
                "properties": item.properties, "assets": [a.key for a in chosen]}
    name = f"{item_name}#{','.join(a.key for a in chosen)}"
    srs = escape(first.crs.to_wkt()) if first.crs else ""
    geo = f"{left!r}, {res!r}, 0.0, {top!r}, 0.0, {-res!r}"
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        + (f"<SRS>{srs}</SRS>" if srs else "")
        + f"<GeoTransform>{geo}</GeoTransform>"
        + f'<Metadata domain="{METADATA_DOMAIN}"><MDI key="name">{escape(name)}</MDI>'
        + f'<MDI key="stac">{escape(json.dumps(metadata, default=str))}</MDI></Metadata>'
        + "".join(bands_xml)
        + "</VRTDataset>"
    )


def _band_xml(index: int, src: _Source, band: int, dtype: str, grid: tuple[float, float, float],
              size: tuple[int, int]) -> str:
    left, top, res = grid
    x0 = (src.transform.c - left) / res
    y0 = (top - src.transform.f) / res
    w = src.width * abs(src.transform.a) / res
    h = src.height * abs(src.transform.e) / res
    nodata = "" if src.nodata is None or math.isnan(src.nodata) else f"<NoDataValue>{src.nodata!r}</NoDataValue>"
    description = src.asset.key if len(src.dtypes) == 1 or src.asset.band else f"{src.asset.key} {band}"
    return (
        f'<VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "Float64")}" band="{index}">'
        f"<Description>{escape(description)}</Description>{nodata}"
        f'<ComplexSource resampling="nearest"><SourceFilename relativeToVRT="0">'
        f"{escape(gdal_path(src.asset.href))}</SourceFilename><SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="0" yOff="0" xSize="{src.width}" ySize="{src.height}"/>'
        f'<DstRect xOff="{x0!r}" yOff="{y0!r}" xSize="{w!r}" ySize="{h!r}"/>'
        f"{'' if not nodata else f'<NODATA>{src.nodata!r}</NODATA>'}"
        "</ComplexSource></VRTRasterBand>"
    )


def scene_source(path: str | os.PathLike, assets: str | None = None) -> str:
    """What to open for SCENE ``path``: the VRT XML of a STAC item (``assets`` chosen),
    else ``path`` unchanged. ``assets`` for a scene that is not a STAC item is an error."""
    text = os.fspath(path)
    if is_stac_item(text):
        return item_vrt(text, assets)
    if assets:
        raise InputError(f"--assets chooses assets of a STAC item; {display_name(text)} is not one (.json or /items/)")
    return text
