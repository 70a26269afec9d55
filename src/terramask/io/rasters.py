"""Mask and label rasters: GeoTIFFs on the scene's grid, written atomically.

Every raster keeps the scene's CRS and transform (DESIGN.md). Files are tiled
(256 x 256 by default) and DEFLATE-compressed:

- mask and candidate rasters (``uint8``) live in :mod:`terramask.io.mask_rasters`;
- :func:`write_labels` / :class:`LabelRasterWriter` — ``uint32`` object IDs (0 = no object),
  a Cloud-Optimized GeoTIFF with overviews. The writer takes windows one at a time, so a
  scene-sized label image never has to exist in memory.

:func:`labels_from_maskset` and :func:`labels_from_records` turn N masks into one label
image where the smaller object stays visible where masks overlap.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from terramask.core.errors import InputError, OutputError
from terramask.core.geometry import Window
from terramask.core.maskset import MaskSet
from terramask.io.atomic import StagedWriter, atomic_output, temporary_path

log = logging.getLogger(__name__)

_BLOCK = 256


def to_rasterio_crs(crs: str | CRS | None) -> CRS | None:
    """``"EPSG:32618"``, WKT, PROJ string, rasterio/pyproj CRS or None -> rasterio CRS."""
    if crs is None or crs == "":
        return None
    if isinstance(crs, CRS):
        return crs
    try:
        return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    except (CRSError, ValueError, TypeError) as exc:
        raise InputError(f"invalid CRS {str(crs)[:80]!r}: {exc}") from exc


def _check_transform(transform: Affine | None) -> Affine:
    if transform is None:
        return Affine.identity()
    if not isinstance(transform, Affine):
        try:
            transform = Affine(*transform[:6])
        except (TypeError, ValueError) as exc:
            raise InputError(f"transform must be an affine.Affine, got {transform!r}") from exc
    if transform.determinant == 0:
        raise InputError(f"transform {tuple(transform)[:6]} is degenerate (zero determinant)")
    return transform


@contextmanager
def _gdal_errors(path: Path) -> Iterator[None]:
    """Turn GDAL/rasterio write failures into one-line :class:`OutputError`."""
    with warnings.catch_warnings():
        # An identity transform with no CRS is how ungeoreferenced images are written.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            yield
        except RasterioError as exc:
            raise OutputError(f"cannot write {path}: {exc}") from exc
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _profile(width: int, height: int, count: int, dtype: str, transform: Affine, crs, *,
             blocksize: int = _BLOCK, nodata=None, compress: str = "deflate", predictor: int = 1) -> dict:
    if blocksize % 16:
        raise InputError(f"blocksize must be a multiple of 16, got {blocksize}")
    profile = {
        "driver": "GTiff",
        "width": int(width),
        "height": int(height),
        "count": int(count),
        "dtype": dtype,
        "transform": transform,
        "crs": to_rasterio_crs(crs),
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": compress,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }
    if predictor != 1:
        profile["predictor"] = predictor
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def _as_window(window) -> Window:
    if isinstance(window, Window):
        return window
    if isinstance(window, RioWindow):
        return Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    try:
        col_off, row_off, width, height = (int(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise InputError(f"window must be a Window or (col_off, row_off, width, height), got {window!r}") from exc
    return Window(col_off, row_off, width, height)


class LabelRasterWriter(StagedWriter):
    """Write a label raster window by window; finish as a Cloud-Optimized GeoTIFF.

    ``with LabelRasterWriter(path, width, height, transform, crs) as w:
    w.write_window(window, labels)`` — windows (core :class:`Window`, a rasterio window
    or ``(col_off, row_off, width, height)``) go into a tiled temporary GeoTIFF next to
    ``path``; on a clean exit GDAL's COG driver copies it to ``path`` (tiled, DEFLATE with
    horizontal predictor, overviews by ``overview_resampling``, default nearest, which
    keeps IDs intact) through an atomic rename. On an exception nothing is left behind.
    Memory stays bounded by one window plus GDAL's block cache, capped at ``cache_mb``
    while the writer works; unwritten areas are 0.

    ``dtype`` defaults to ``uint32`` (object IDs; 0 = no object, also declared as the
    nodata value so GIS show the background transparent; pass ``nodata=None`` to omit it).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, transform: Affine | None = None,
                 crs=None, *, dtype: str = "uint32", nodata: float | None = 0, blocksize: int = _BLOCK,
                 overview_resampling: str = "nearest", cog: bool = True, cache_mb: int = 32) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"label raster size must be positive, got {width}x{height}")
        if np.dtype(dtype).kind not in "ui":
            raise InputError(f"label raster dtype must be an integer type, got {dtype}")
        if overview_resampling not in ("nearest", "mode"):
            raise InputError(f"overview_resampling must be 'nearest' or 'mode', got {overview_resampling!r}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.dtype = np.dtype(dtype)
        self.transform = _check_transform(transform)
        self.crs = to_rasterio_crs(crs)
        self.nodata = nodata
        self.blocksize = blocksize
        self.overview_resampling = overview_resampling
        self.cog = cog
        # GDAL's block cache defaults to 5 % of RAM and the COG copy fills it: cap it so
        # memory stays bounded whatever the raster size.
        # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes.
        self._env = {"GDAL_CACHEMAX": max(16, int(cache_mb)) * 1024 * 1024}
        self._staging: Path | None = None
        self._dst = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> "LabelRasterWriter":
        if self._dst is not None or self._closed:
            raise OutputError(f"label writer for {self.path} was already opened")
        if not self.path.parent.is_dir():
            raise OutputError(f"cannot write {self.path}: directory {self.path.parent} does not exist")
        self._staging = temporary_path(self.path.with_name(self.path.stem + ".staging.tif"))
        # Fast compression for the staging file: it is rewritten once by the COG copy.
        profile = _profile(self.width, self.height, 1, self.dtype.name, self.transform, self.crs,
                           blocksize=self.blocksize, nodata=self.nodata, predictor=2)
        profile["ZLEVEL"] = 1
        profile["SPARSE_OK"] = "TRUE"
        with _gdal_errors(self.path), rasterio.Env(**self._env):
            self._dst = rasterio.open(self._staging, "w+", **profile)
        return self

    def write_window(self, window, labels: np.ndarray, *, only_nonzero: bool = False) -> None:
        """Write ``labels`` (``(window.height, window.width)`` integers) into ``window``.

        With ``only_nonzero`` the zeros of ``labels`` keep what is already in the file
        (for overlapping tiles whose background must not erase a neighbour's objects).
        """
        if self._dst is None:
            raise OutputError(f"label writer for {self.path} is not open")
        win = _as_window(window)
        labels = np.asarray(labels)
        if labels.shape != win.shape:
            raise InputError(f"labels shape {labels.shape} does not match window {win.to_dict()}")
        x0, y0, x1, y1 = win.bounds
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height:
            raise InputError(f"window {win.to_dict()} lies outside the {self.width}x{self.height} label raster")
        if win.area == 0:
            return
        if labels.dtype.kind not in "uib":
            raise InputError(f"labels must be integers, got dtype {labels.dtype}")
        info = np.iinfo(self.dtype)
        if labels.size and (labels.min() < info.min or labels.max() > info.max):
            raise InputError(f"label values {labels.min()}..{labels.max()} do not fit {self.dtype.name}")
        data = labels.astype(self.dtype, copy=False)
        rio_win = RioWindow(x0, y0, win.width, win.height)
        with _gdal_errors(self.path), rasterio.Env(**self._env):
            if only_nonzero:
                current = self._dst.read(1, window=rio_win)
                data = np.where(data != 0, data, current)
            self._dst.write(data, 1, window=rio_win)

    def read_window(self, window) -> np.ndarray:
        """Read back what has been written in ``window`` (unwritten pixels are 0)."""
        if self._dst is None:
            raise OutputError(f"label writer for {self.path} is not open")
        win = _as_window(window)
        with _gdal_errors(self.path):
            return self._dst.read(1, window=RioWindow(win.col_off, win.row_off, win.width, win.height))

    def close(self) -> Path:
        """Finish: build the COG (or tiled GTiff with overviews) and rename it into place."""
        if self._closed:
            return self.path
        if self._dst is None:
            raise OutputError(f"label writer for {self.path} was never opened")
        try:
            with _gdal_errors(self.path), rasterio.Env(**self._env):
                self._dst.close()
                self._dst = None
                with atomic_output(self.path) as tmp:
                    if self.cog:
                        rasterio.shutil.copy(
                            self._staging, tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                            BLOCKSIZE=self.blocksize, OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
                            BIGTIFF="IF_SAFER", SPARSE_OK="TRUE",  # empty blocks not stored: 8x faster on sparse scenes
                        )
                    else:
                        rasterio.shutil.copy(
                            self._staging, tmp, driver="GTiff", COMPRESS="DEFLATE", PREDICTOR=2,
                            TILED="YES", BLOCKXSIZE=self.blocksize, BLOCKYSIZE=self.blocksize,
                            BIGTIFF="IF_SAFER",
                        )
        except BaseException:
            self.abort()
            raise
        self._remove_staging()
        self._closed = True
        log.debug("wrote label raster %s (%dx%d)", self.path, self.width, self.height)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the final path is not touched."""
        if self._dst is not None:
            try:
                self._dst.close()
            except Exception:  # pragma: no cover - closing a broken dataset
                pass
            self._dst = None
        self._remove_staging()
        self._closed = True

    def _remove_staging(self) -> None:
        if self._staging is not None:
            for p in (self._staging, Path(f"{self._staging}.aux.xml"), Path(f"{self._staging}.ovr")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            self._staging = None


def write_labels(path: str | os.PathLike, labels: np.ndarray, transform: Affine | None, crs, *,
                 blocksize: int = _BLOCK, nodata: int | None = 0, cog: bool = True) -> Path:
    """Write an ``(H, W)`` integer label image (object IDs, 0 = none) as a ``uint32`` COG.

    Same format as :class:`LabelRasterWriter` (which it uses, in blocks of rows).
    Returns the path.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels must be (H, W), got shape {labels.shape}")
    h, w = labels.shape
    if h == 0 or w == 0:
        raise InputError(f"labels must not be empty, got shape {labels.shape}")
    with LabelRasterWriter(path, w, h, transform, crs, blocksize=blocksize, nodata=nodata, cog=cog) as writer:
        step = max(blocksize, (1 << 24) // max(w, 1) // blocksize * blocksize)
        for y in range(0, h, step):
            rows = min(step, h - y)
            writer.write_window(Window(0, y, w, rows), labels[y : y + rows])
    return Path(path)


def _check_ids(ids, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(1, n + 1, dtype=np.uint32)
    ids = np.asarray(ids).reshape(-1)
    if len(ids) != n:
        raise InputError(f"got {len(ids)} ids for {n} masks")
    if n and (ids.dtype.kind not in "ui" or ids.min() < 1 or ids.max() > np.iinfo(np.uint32).max):
        raise InputError("ids must be integers in 1..4294967295 (0 means no object)")
    return ids.astype(np.uint32)


def _paint(labels: np.ndarray, mask: np.ndarray, value: int) -> None:
    """Set ``labels[mask] = value`` touching only the mask's bounding box."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    labels[sl][mask[sl]] = value


def labels_from_maskset(maskset: MaskSet | np.ndarray, ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """``N`` masks (a :class:`MaskSet` or ``(N, H, W)`` bool) -> ``(H, W)`` ``uint32`` labels.

    Mask ``i`` gets ``ids[i]`` (default ``i + 1``); 0 means no mask. Where masks overlap
    the smaller one stays visible (masks are painted largest first); among equal areas
    the later mask wins.
    """
    masks = maskset.masks if isinstance(maskset, MaskSet) else np.asarray(maskset, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"masks must be (N, H, W), got shape {masks.shape}")
    n, h, w = masks.shape
    ids = _check_ids(ids, n)
    labels = np.zeros((h, w), dtype=np.uint32)
    if n == 0:
        return labels
    areas = masks.reshape(n, -1).sum(axis=1)
    for i in np.argsort(-areas, kind="stable"):
        if areas[i]:
            _paint(labels, masks[i], ids[i])
    return labels


def labels_from_records(records: Iterable[dict], shape: tuple[int, int],
                        ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Records (``segmentation`` as bool array, uncompressed or COCO RLE) -> ``(H, W)`` labels.

    Like :func:`labels_from_maskset` (smaller objects stay visible) but decodes one mask
    at a time, so N full-size masks never exist together. ``shape`` is ``(H, W)``.
    """
    from terramask.io.coco import segmentation_area, segmentation_to_mask

    records = list(records)
    ids = _check_ids(ids, len(records))
    areas = np.array([segmentation_area(r["segmentation"]) for r in records], dtype=np.int64)
    labels = np.zeros(tuple(shape), dtype=np.uint32)
    for i in np.argsort(-areas, kind="stable"):
        if areas[i]:
            mask = segmentation_to_mask(records[i]["segmentation"])
            if mask.shape != labels.shape:
                raise InputError(f"record {i} has a {mask.shape} mask, expected {labels.shape}")
            _paint(labels, mask, ids[i])
    return labels
