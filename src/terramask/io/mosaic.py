"""Several scenes covering one area as one virtual scene in one CRS (a GDAL VRT).

:func:`mosaic_vrt` puts scenes (local files, URLs, ``/vsi`` paths) on one pixel grid:

- CRS: ``crs`` if given, else the first scene's;
- resolution: the finest of the scenes once reprojected (GDAL's suggested warp
  resolution for each), square pixels; extent: the union of the scenes;
- a scene in another CRS, or off the grid, is reprojected on the fly by a warped VRT
  (``resampling``, default ``bilinear``; ``nearest`` keeps values exactly, e.g. for
  classes), aligned to the grid so it lands on whole pixels; nothing is copied;
- order: where scenes overlap, a later scene covers an earlier one, except where the
  later one holds nodata (the scene's nodata value, else 0, which is also the value of
  pixels no scene covers).

All scenes must have the same band count. The result is VRT XML, opened by
:func:`terramask.io.scene.open_scene` like a file name and handed to workers instead of
a path, so the whole tiled pipeline (tiles, cross-tile merging, outputs) sees one scene:
an object crossing the border between two scenes is merged like one crossing tiles. The
warped VRTs of reprojected scenes are small XML files in a content-addressed folder of
the system temp dir (``terramask-vrt``), shared by every process of the machine.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from affine import Affine

from terramask.core.errors import InputError, SceneError, SceneNotFoundError
from terramask.io.remote import configure_gdal, display_name, gdal_path, is_remote, remote_open_error

RESAMPLINGS = ("nearest", "bilinear", "cubic", "average")
IMAGE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass
class _Placed:
    """One scene on the mosaic grid: the file to read, where it lands, its nodata."""

    filename: str
    col_off: int
    row_off: int
    width: int
    height: int
    nodata: float


def mosaic_inputs(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Scenes of a mosaic: the given ones, a folder standing for its raster files (sorted)."""
    out: list[str] = []
    for p in paths:
        text = os.fspath(p)
        if not is_remote(text) and Path(text).is_dir():
            out += sorted(str(f) for f in Path(text).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(text)
    if len(out) < 2:
        raise InputError(f"a mosaic needs at least two scenes, got {len(out)}")
    return out


def _open(path: str) -> Any:
    import rasterio
    import rasterio.errors

    from terramask.io.gdal import gdal_reason

    name = display_name(path)
    if is_remote(path):
        configure_gdal()
    elif not Path(path).exists():
        raise SceneNotFoundError(f"{name}: no such file")
    try:
        return rasterio.open(gdal_path(path if is_remote(path) else os.path.abspath(path)))
    except rasterio.errors.RasterioError as exc:
        if is_remote(path):
            raise remote_open_error(name, gdal_reason(exc)) from exc
        raise SceneError(f"{name}: cannot open as a raster: {gdal_reason(exc)}") from exc


def mosaic_vrt(paths: Sequence[str | os.PathLike], crs: str | None = None, resampling: str = "bilinear") -> str:
    """VRT XML of the scenes at ``paths`` on one grid (module docstring)."""
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform, transform_bounds

    if resampling not in RESAMPLINGS:
        raise InputError(f"unknown mosaic resampling {resampling!r}; use one of {', '.join(RESAMPLINGS)}")
    names = mosaic_inputs(paths)
    datasets = [_open(n) for n in names]
    try:
        if any(ds.crs is None for ds in datasets):
            bad = next(n for n, ds in zip(names, datasets, strict=True) if ds.crs is None)
            raise SceneError(f"{display_name(bad)}: has no CRS; a mosaic needs georeferenced scenes")
        counts = {ds.count for ds in datasets}
        if len(counts) > 1:
            raise SceneError(f"the mosaic's scenes have different band counts ({sorted(counts)}); give scenes alike")
        dst_crs = CRS.from_user_input(crs) if crs else datasets[0].crs
        bounds, res = [], math.inf
        for ds in datasets:
            bounds.append(transform_bounds(ds.crs, dst_crs, *ds.bounds, densify_pts=21))
            t, _, _ = calculate_default_transform(ds.crs, dst_crs, ds.width, ds.height, *ds.bounds)
            res = min(res, abs(t.a), abs(t.e))
        left, top = min(b[0] for b in bounds), max(b[3] for b in bounds)
        width = int(math.ceil((max(b[2] for b in bounds) - left) / res))
        height = int(math.ceil((top - min(b[1] for b in bounds)) / res))
        grid = Affine(res, 0.0, left, 0.0, -res, top)
        placed = [_place(ds, b, grid, dst_crs, resampling) for ds, b in zip(datasets, bounds, strict=True)]
        dtype = np.result_type(*[np.dtype(d) for ds in datasets for d in ds.dtypes]).name
        count = datasets[0].count
    finally:
        for ds in datasets:
            ds.close()
    name = f"mosaic of {len(names)} scenes: " + ", ".join(display_name(n) for n in names)
    return _mosaic_xml(name, dst_crs.to_wkt(), grid, (width, height), count, dtype, placed)


def _place(ds: Any, bounds: tuple[float, ...], grid: Affine, dst_crs: Any, resampling: str) -> _Placed:
    """Where ``ds`` lands on ``grid``; a warped VRT file when it must be reprojected."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    res, left, top = grid.a, grid.c, grid.f
    col0 = int(math.floor((bounds[0] - left) / res + 1e-6))
    row0 = int(math.floor((top - bounds[3]) / res + 1e-6))
    cols = max(1, int(math.ceil((bounds[2] - left) / res - 1e-6)) - col0)
    rows = max(1, int(math.ceil((top - bounds[1]) / res - 1e-6)) - row0)
    nodata = 0.0 if ds.nodata is None or math.isnan(ds.nodata) else float(ds.nodata)
    transform = Affine(res, 0.0, left + col0 * res, 0.0, -res, top - row0 * res)
    if ds.crs == dst_crs and ds.transform.almost_equals(transform) and (ds.width, ds.height) == (cols, rows):
        return _Placed(ds.name, col0, row0, cols, rows, nodata)
    with WarpedVRT(ds, crs=dst_crs, transform=transform, width=cols, height=rows, nodata=nodata,
                   resampling=Resampling[resampling]) as vrt:
        xml = vrt.tags(ns="xml:VRT")["xml:VRT"]
    return _Placed(_store(xml), col0, row0, cols, rows, nodata)


def _store(xml: str) -> str:
    """Write ``xml`` to ``<tmp>/terramask-vrt/<sha256>.vrt`` once; returns the path."""
    folder = Path(tempfile.gettempdir()) / "terramask-vrt"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(xml.encode("utf-8")).hexdigest()[:32] + ".vrt")
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(xml, encoding="utf-8")
        os.replace(tmp, path)
    return str(path)


def _mosaic_xml(name: str, wkt: str, grid: Affine, size: tuple[int, int], count: int, dtype: str,
                placed: list[_Placed]) -> str:
    gt = ", ".join(repr(float(v)) for v in (grid.c, grid.a, grid.b, grid.f, grid.d, grid.e))
    nodata = placed[0].nodata
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(p.filename)}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{p.width}" ySize="{p.height}"/>'
            f'<DstRect xOff="{p.col_off}" yOff="{p.row_off}" xSize="{p.width}" ySize="{p.height}"/>'
            f"<NODATA>{p.nodata!r}</NODATA></ComplexSource>"
            for p in placed
        )
        bands.append(f'<VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "Float64")}" band="{b}">'
                     f"<NoDataValue>{nodata!r}</NoDataValue>{sources}</VRTRasterBand>")
    return (f'<VRTDataset rasterXSize="{size[0]}" rasterYSize="{size[1]}"><SRS>{escape(wkt)}</SRS>'
            f"<GeoTransform>{gt}</GeoTransform>"
            f'<Metadata domain="terramask"><MDI key="name">{escape(name)}</MDI></Metadata>'
            + "".join(bands) + "</VRTDataset>")
