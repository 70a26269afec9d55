"""Mask and candidate GeoTIFFs on a scene's grid, written window by window.

``terramask predict`` writes ``mask.tif`` and ``candidates.tif`` with the size, CRS and
transform of the scene, however large, while the model only saw one window (or a few).
:class:`WindowMaskWriter` materialises only the windows it is given: the file is tiled
(256 x 256) and DEFLATE-compressed, and GDAL fills the blocks never written with one
compressed block of zeros, so a 100,000 x 100,000 px mask costs a few tens of MB on
disk, a fraction of a second, and memory bounded by one window.

Values (``uint8``): 1 = object, 0 = not object (also everywhere outside the written
windows), 255 = scene nodata (marked only inside written windows, the only part that was
read). The band's nodata value is 255 when a nodata mask was given. GDAL reads
never-written blocks as the nodata value, so nodata is declared only once the file is
complete (its empty blocks filled with zeros).

:func:`write_mask` and :func:`write_candidates` write in-memory ``(H, W)`` /
``(K, H, W)`` arrays through the same writer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window as RioWindow

from terramask.core.errors import InputError, OutputError
from terramask.core.geometry import Window
from terramask.io.atomic import AtomicPath, StagedWriter
from terramask.io.rasters import _BLOCK, _check_transform, _gdal_errors, _profile

log = logging.getLogger(__name__)

MASK_NODATA = 255
"""Value of scene-nodata pixels in mask rasters."""

#: GDAL block cache while a mask raster is written (bytes; rasterio passes ints as bytes).
_CACHE_BYTES = 32 * 1024 * 1024


def _mask_bands(masks: np.ndarray, nodata_mask: np.ndarray | None, name: str) -> np.ndarray:
    """``(K, h, w)`` bool/0-1 masks -> ``(K, h, w)`` uint8 with 255 where ``nodata_mask``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"{name} must be (K, H, W), got shape {masks.shape}")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise InputError(f"{name} must be boolean or 0/1, got values outside {{0, 1}}")
    bands = masks.astype(np.uint8)
    if nodata_mask is not None:
        nodata_mask = np.asarray(nodata_mask, dtype=bool)
        if nodata_mask.shape != bands.shape[1:]:
            raise InputError(f"nodata_mask shape {nodata_mask.shape} differs from {name} shape {bands.shape[1:]}")
        bands[:, nodata_mask] = MASK_NODATA
    return bands


class WindowMaskWriter(StagedWriter):
    """A ``count``-band ``uint8`` mask GeoTIFF of ``width`` x ``height`` px, written by windows.

    ``with WindowMaskWriter(path, width, height, count, transform, crs) as w:
    w.write_window(window, masks, nodata_mask)`` — ``window`` is a core :class:`Window`
    in the raster's pixels, ``masks`` ``(count, window.height, window.width)`` bool,
    ``nodata_mask`` ``(window.height, window.width)`` bool (True = scene nodata) or None.
    Overlapping windows are combined: a pixel is 1 if any window marked it. On a clean
    exit the file is renamed into place (atomic); on an exception nothing is left.

    ``descriptions`` and ``band_tags`` (one per band) and ``tags`` (dataset) are written
    as given; ``nodata`` declares 255 as the band nodata value. Memory: one window plus
    GDAL's block cache (32 MB).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, count: int,
                 transform: Affine | None, crs, *, nodata: bool = False,
                 descriptions: Sequence[str] | None = None, band_tags: Sequence[Mapping[str, str]] | None = None,
                 tags: Mapping[str, str] | None = None, blocksize: int = _BLOCK) -> None:
        if int(width) <= 0 or int(height) <= 0 or int(count) <= 0:
            raise InputError(f"mask raster needs a positive size and band count, got {width}x{height}x{count}")
        for name, values in (("descriptions", descriptions), ("band_tags", band_tags)):
            if values is not None and len(values) != count:
                raise InputError(f"got {len(values)} {name} for {count} band(s)")
        self.path = Path(path)
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.nodata = nodata
        self.descriptions = list(descriptions) if descriptions is not None else None
        self.band_tags = [dict(t) for t in band_tags] if band_tags is not None else None
        self.tags = dict(tags or {})
        # No nodata at creation: GDAL fills never-written blocks with the nodata value.
        self._profile = _profile(self.width, self.height, self.count, "uint8", _check_transform(transform), crs,
                                 blocksize=blocksize)
        self._target: AtomicPath | None = None
        self._dst = None

    def open(self) -> "WindowMaskWriter":
        if self._target is not None:
            raise OutputError(f"mask writer for {self.path} was already opened")
        self._target = AtomicPath(self.path)
        with _gdal_errors(self.path), rasterio.Env(GDAL_CACHEMAX=_CACHE_BYTES):
            self._dst = rasterio.open(self._target.tmp, "w+", **self._profile)
        return self

    def write_window(self, window: Window, masks: np.ndarray, nodata_mask: np.ndarray | None = None) -> None:
        """Write ``(count, h, w)`` masks into ``window``, combined with what is already there."""
        if self._dst is None:
            raise OutputError(f"mask writer for {self.path} is not open")
        bands = _mask_bands(masks, nodata_mask, "masks")
        if bands.shape != (self.count, *window.shape):
            raise InputError(f"masks shape {bands.shape} does not match {self.count} band(s) of window {window.to_dict()}")
        x0, y0, x1, y1 = window.bounds
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height:
            raise InputError(f"window {window.to_dict()} lies outside the {self.width}x{self.height} mask raster")
        if window.area == 0:
            return
        rio_win = RioWindow(x0, y0, window.width, window.height)
        with _gdal_errors(self.path), rasterio.Env(GDAL_CACHEMAX=_CACHE_BYTES):
            # 0 < 1 < 255: the maximum is the union of masks, and nodata stays nodata.
            current = self._dst.read(window=rio_win)
            self._dst.write(np.maximum(current, bands), window=rio_win)

    def close(self) -> Path:
        """Finish the file (empty blocks filled with zeros, then nodata declared) and rename it into place."""
        if self._dst is None or self._target is None:
            raise OutputError(f"mask writer for {self.path} is not open")
        try:
            with _gdal_errors(self.path), rasterio.Env(GDAL_CACHEMAX=_CACHE_BYTES):
                self._describe(self._dst)
                self._dst.close()
                self._dst = None
                if self.nodata:
                    with rasterio.open(self._target.tmp, "r+") as dst:
                        dst.nodata = MASK_NODATA
            self._target.commit()
        except BaseException:
            self.abort()
            raise
        log.debug("wrote mask raster %s (%dx%d, %d band(s))", self.path, self.width, self.height, self.count)
        return self.path

    def abort(self) -> None:
        """Drop the file being written; the final path is not touched."""
        if self._dst is not None:
            try:
                self._dst.close()
            except Exception:  # pragma: no cover - closing a broken dataset
                pass
            self._dst = None
        if self._target is not None and not self._target.done:
            self._target.discard()

    def _describe(self, dst) -> None:
        for k in range(self.count):
            if self.descriptions is not None:
                dst.set_band_description(k + 1, self.descriptions[k])
            if self.band_tags is not None and self.band_tags[k]:
                dst.update_tags(k + 1, **self.band_tags[k])
        if self.tags:
            dst.update_tags(**self.tags)


def mask_meaning(nodata: bool) -> str:
    """The ``meaning`` tag of a mask band."""
    return "1=object 0=background" + (" 255=nodata" if nodata else "")


def mask_writer(path: str | os.PathLike, width: int, height: int, transform: Affine | None, crs, *,
                nodata: bool, blocksize: int = _BLOCK) -> WindowMaskWriter:
    """A one-band writer for ``mask.tif`` (description ``mask``, ``meaning`` tag)."""
    return WindowMaskWriter(path, width, height, 1, transform, crs, nodata=nodata, descriptions=["mask"],
                            band_tags=[{"meaning": mask_meaning(nodata)}], blocksize=blocksize)


def candidates_writer(path: str | os.PathLike, width: int, height: int, scores: Sequence[float] | np.ndarray,
                      transform: Affine | None, crs, *, nodata: bool, blocksize: int = _BLOCK) -> WindowMaskWriter:
    """A writer for ``candidates.tif``: band ``k`` (1-based) is candidate ``k``; its description
    is ``"candidate k score=0.9812"``, its tags ``candidate`` and ``score``; the dataset tag
    ``scores`` lists all scores."""
    values = [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(-1)]
    if not values:
        raise InputError(f"cannot write {path}: no candidate masks")
    return WindowMaskWriter(
        path, width, height, len(values), transform, crs, nodata=nodata,
        descriptions=[f"candidate {k + 1} score={s:.4f}" for k, s in enumerate(values)],
        band_tags=[{"candidate": str(k + 1), "score": repr(s)} for k, s in enumerate(values)],
        tags={"scores": ",".join(repr(s) for s in values)}, blocksize=blocksize,
    )


def write_mask(path: str | os.PathLike, mask: np.ndarray, transform: Affine | None, crs,
               nodata_mask: np.ndarray | None = None, *, blocksize: int = _BLOCK) -> Path:
    """Write one ``(H, W)`` bool/0-1 mask as a single-band ``uint8`` GeoTIFF.

    Values: 1 object, 0 not object; with ``nodata_mask`` (``(H, W)`` bool, True = scene
    nodata) those pixels are 255 and the band's nodata is 255. Tiled, DEFLATE, on the
    scene's ``transform`` (``affine.Affine``, pixel -> world) and ``crs`` (None for
    ungeoreferenced images). Written atomically; returns the path.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"mask must be (H, W), got shape {mask.shape}")
    h, w = mask.shape
    with mask_writer(path, w, h, transform, crs, nodata=nodata_mask is not None, blocksize=blocksize) as writer:
        writer.write_window(Window(0, 0, w, h), mask[None], nodata_mask)
    return Path(path)


def write_candidates(path: str | os.PathLike, masks: np.ndarray, scores: Sequence[float] | np.ndarray,
                     transform: Affine | None, crs, nodata_mask: np.ndarray | None = None, *,
                     blocksize: int = _BLOCK) -> Path:
    """Write ``(K, H, W)`` candidate masks as a K-band ``uint8`` GeoTIFF (see :func:`candidates_writer`).

    Callers pass candidates sorted by score. Values as in :func:`write_mask`. Written
    atomically; returns the path.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"candidate masks must be (K, H, W), got shape {masks.shape}")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(values) != masks.shape[0]:
        raise InputError(f"got {masks.shape[0]} candidate masks but {len(values)} scores")
    _, h, w = masks.shape
    with candidates_writer(path, w, h, values, transform, crs, nodata=nodata_mask is not None,
                           blocksize=blocksize) as writer:
        writer.write_window(Window(0, 0, w, h), masks, nodata_mask)
    return Path(path)
