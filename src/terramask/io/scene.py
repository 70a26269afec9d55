"""Open a raster scene (GeoTIFF, PNG, JPEG …) and read windows of its display bands.

A :class:`Scene` wraps one open rasterio dataset. It decides once, for the whole scene,

- which bands make the RGB composite (``bands``: 0-based scene band indices, from the
  user's 1-based spec via :func:`terramask.core.image.parse_bands`), and
- the radiometric stretch to 8 bits (``stretch``: per-band percentile clip over the whole
  scene, computed from overviews or a decimated read, ignoring nodata and NaN; ``None``
  for uint8 data, which is shown as is),

so every window read from it looks alike. Reads are windowed (:class:`terramask.core.Window`,
scene pixels, rasterio order); nothing here ever holds the full scene of a large file.

Typical use::

    with open_scene("scene.tif", bands="4,3,2") as scene:
        image = scene.read(Window(0, 0, 1024, 1024))  # GeoImage of the display bands
        rgb = image.to_rgb8()                          # (1024, 1024, 3) uint8

A scene is not thread-safe and cannot be pickled; workers open their own scene with
``open_scene(path, bands=..., stretch=scene.stretch)`` so statistics are computed once.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Iterator

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window as RioWindow

from terramask.core.errors import InputError, SceneError
from terramask.core.frames import window_transform
from terramask.core.geometry import Window
from terramask.core.image import GeoImage, parse_bands
from terramask.core.stretch import Stretch, compute_stretch, validate_percentiles
from terramask.io.gdal import RESAMPLING as _RESAMPLING
from terramask.io.gdal import crs_string, gdal_reason, open_dataset, quiet_georef
from terramask.io.remote import display_name, is_remote, is_vrt_xml, redact
from terramask.io.sparse import block_presence, decimated_read, window_is_stored
from terramask.io.stac import METADATA_DOMAIN

log = logging.getLogger(__name__)

#: Longest side (pixels) of the decimated read used for scene-wide stretch statistics.
STATS_MAX_SIZE = 2048


class Scene:
    """One open raster with its display bands and scene-wide stretch.

    Attributes (read-only):

    - ``path``: the scene as shown in messages, logs and outputs (a URL without its query
      string, :func:`terramask.io.remote.display_name`); ``source``: the string to give
      :func:`open_scene` to open it again (a signed URL keeps its signature)
    - ``width``, ``height``, ``count`` (band count), ``dtype`` (numpy dtype)
    - ``crs``: ``"EPSG:N"`` or WKT; ``None`` for plain images
    - ``transform``: :class:`affine.Affine`, scene pixel ``(x, y)`` -> world; identity without georeference
    - ``nodata``: the nodata value or ``None``
    - ``band_names``: one name per scene band (the band description, else ``"band N"``, 1-based)
    - ``bands``: 0-based scene band indices of the RGB composite (3 of them)
    - ``stretch``: scene-wide :class:`Stretch` over *all* scene bands (``None`` for uint8),
      computed on first access unless given to :func:`open_scene`
    """

    def __init__(
        self,
        dataset,
        source: str,
        bands: tuple[int, ...],
        percentiles: tuple[float, float],
        stretch: Stretch | None = None,
    ) -> None:
        self._ds = dataset
        self.source = source
        self.path = display_name(source)
        #: what a STAC item's virtual scene says about the item (id, datetime, properties, assets), else None
        self.stac: dict | None = None
        if is_vrt_xml(source):
            stac = dataset.tags(ns=METADATA_DOMAIN).get("stac")
            self.stac = json.loads(stac) if stac else None
        self.width = int(dataset.width)
        self.height = int(dataset.height)
        self.count = int(dataset.count)
        self.dtype = np.dtype(np.result_type(*dataset.dtypes))
        self.crs = crs_string(dataset.crs)
        self.transform: Affine = dataset.transform
        self.nodata = None if dataset.nodata is None else float(dataset.nodata)
        self.band_names = tuple(
            (desc or f"band {i + 1}") for i, desc in enumerate(dataset.descriptions or (None,) * self.count)
        )
        self.bands = tuple(bands)
        self.percentiles = percentiles
        # Pixels are invalid where nodata/NaN; without nodata an internal mask band or an
        # alpha band (GDAL per-dataset mask) marks them instead.
        flags = dataset.mask_flag_enums[0] if dataset.mask_flag_enums else ()
        self._uses_mask_band = self.nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
        self._stretch = stretch
        self._stretch_given = stretch is not None
        self._presence: np.ndarray | None | bool = False  # False: not looked up yet
        if stretch is not None and (len(stretch.low) != self.count or len(stretch.high) != self.count):
            raise InputError(f"{self.path}: the given stretch has {len(stretch.low)} band(s), the scene has {self.count}")

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        self._ds.close()

    @property
    def closed(self) -> bool:
        return bool(self._ds.closed)

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Scene({self.path!r}, {self.width}x{self.height}, {self.count} band(s) {self.dtype}, "
            f"crs={self.crs if self.crs is None or len(self.crs) < 40 else self.crs[:37] + '...'}, "
            f"bands={tuple(b + 1 for b in self.bands)})"
        )

    # -- geometry -----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.height, self.width)

    @property
    def window(self) -> Window:
        """The window covering the whole scene."""
        return Window.full(self.width, self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """World bounds ``(left, bottom, right, top)`` in ``crs`` units (pixels without CRS)."""
        b = self._ds.bounds
        return (float(b.left), float(b.bottom), float(b.right), float(b.top))

    @property
    def has_overviews(self) -> bool:
        return bool(self._ds.overviews(1))

    def window_transform(self, window: Window) -> Affine:
        """Transform of ``window``'s pixel grid."""
        return window_transform(self.transform, window.col_off, window.row_off)

    # -- stored blocks (sparse GeoTIFFs) ---------------------------------------------------

    @property
    def block_presence(self) -> np.ndarray | None:
        """``(block_rows, block_cols)`` bool of the blocks stored in the file (any band), or
        None when unknown; see :mod:`terramask.io.sparse`. Read once, from metadata only."""
        if self._presence is False:
            self._check_open()
            self._presence = block_presence(self._ds, list(range(1, self.count + 1)))
        return self._presence  # type: ignore[return-value]

    @property
    def mostly_sparse(self) -> bool:
        """Fewer than half of the file's blocks are stored (decimated reads use them only)."""
        presence = self.block_presence
        return presence is not None and presence.size > 1 and float(presence.mean()) < 0.5

    def window_is_empty(self, window: Window) -> bool:
        """True when no stored block meets ``window``: every pixel there is the fill value
        (nodata, else 0), known without reading pixels. False when unknown."""
        presence = self.block_presence
        if presence is None:
            return False
        w = self.check_window(window)
        return not window_is_stored(presence, self._ds.block_shapes[0], w.col_off, w.row_off, w.width, w.height)

    def _fill_value(self) -> float:
        return 0.0 if self.nodata is None else self.nodata

    def check_window(self, window: Window | None) -> Window:
        """``window`` (``None`` = whole scene) if it is non-empty and inside the scene, else :class:`InputError`."""
        if window is None:
            return self.window
        if not isinstance(window, Window):
            raise InputError(f"{self.path}: expected a terramask Window, got {type(window).__name__}")
        x0, y0, x1, y1 = window.bounds
        if window.width == 0 or window.height == 0:
            raise InputError(f"{self.path}: window {window.to_dict()} is empty")
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height:
            raise InputError(
                f"{self.path}: window {window.to_dict()} is not inside the scene "
                f"({self.width}x{self.height} px, columns 0..{self.width}, rows 0..{self.height})"
            )
        return window

    # -- reading ------------------------------------------------------------------------

    def _read_indexes(self) -> list[int]:
        """1-based dataset band indexes read for the display bands.

        One band when all three display bands are the same (grey), else the three bands
        in display order, so the GeoImage's default ``to_rgb8()`` gives the composite."""
        if len(set(self.bands)) == 1:
            return [self.bands[0] + 1]
        return [b + 1 for b in self.bands]

    def _remote_hint(self) -> str:
        if is_remote(self.source) or is_vrt_xml(self.source):
            return " (read over the network: the connection was cut, or the remote file is truncated or changed)"
        return ""

    def _check_open(self) -> None:
        if self._ds.closed:
            raise SceneError(f"{self.path}: the scene is closed")

    def _rio_read(self, what: str, **kwargs) -> np.ndarray:
        self._check_open()
        try:
            with quiet_georef():
                return self._ds.read(**kwargs)
        except rasterio.errors.RasterioError as exc:
            raise SceneError(f"{self.path}: cannot read {what}: {gdal_reason(exc)}{self._remote_hint()}") from exc

    def _rio_mask(self, what: str, **kwargs) -> np.ndarray:
        self._check_open()
        try:
            with quiet_georef():
                return self._ds.dataset_mask(**kwargs)
        except rasterio.errors.RasterioError as exc:
            raise SceneError(
                f"{self.path}: cannot read the mask of {what}: {gdal_reason(exc)}{self._remote_hint()}") from exc

    def read(
        self,
        window: Window | None = None,
        out_shape: tuple[int, int] | None = None,
        resampling: str = "nearest",
    ) -> GeoImage:
        """Pixels of the display bands in ``window`` (``None`` = whole scene) as a GeoImage.

        The GeoImage holds ``(k, rows, cols)`` pixels in the scene dtype, where ``k`` is 1
        (one band shown as grey) or 3 (the display bands in order), so ``to_rgb8()`` with
        no argument gives this scene's composite; its ``stretch`` is the scene-wide stretch
        re-indexed to those ``k`` bands; its ``transform`` is the window's transform;
        ``window`` records where it sits in the scene. ``out_shape`` ``(rows, cols)``
        resamples the window (``resampling``: nearest, bilinear, cubic, average, mode),
        e.g. for quicklooks; the transform is scaled to match.
        Raises :class:`InputError` for a window not inside the scene, :class:`SceneError`
        when the file cannot be read.
        """
        window = self.check_window(window)
        indexes = self._read_indexes()
        kwargs = {"indexes": indexes, "window": _rio_window(window)}
        transform = self.window_transform(window)
        if out_shape is not None:
            rows, cols = (int(v) for v in out_shape)
            if rows <= 0 or cols <= 0:
                raise InputError(f"{self.path}: out_shape must be positive, got {out_shape}")
            if resampling not in _RESAMPLING:
                raise InputError(f"unknown resampling {resampling!r}; use one of {', '.join(_RESAMPLING)}")
            kwargs["out_shape"] = (len(indexes), rows, cols)
            kwargs["resampling"] = _RESAMPLING[resampling]
            transform = transform @ Affine.scale(window.width / cols, window.height / rows)
        presence = self.block_presence if out_shape is not None and window == self.window else None
        if presence is not None and self.mostly_sparse:
            pixels, _ = self._sparse_read(indexes, kwargs["out_shape"][1:], presence)
        else:
            pixels = self._rio_read(f"window {window.to_dict()}", **kwargs)
        stretch = self.stretch
        if stretch is not None:
            picked = [i - 1 for i in indexes]
            stretch = Stretch(
                tuple(stretch.low[b] for b in picked), tuple(stretch.high[b] for b in picked), stretch.percentiles
            )
        return GeoImage(
            pixels=pixels,
            transform=transform,
            crs=self.crs,
            nodata=self.nodata,
            band_names=tuple(self.band_names[i - 1] for i in indexes),
            source=self.path,
            window=window,
            stretch=stretch,
        )

    def read_rgb8(self, window: Window | None = None) -> np.ndarray:
        """``(rows, cols, 3)`` uint8 composite of ``window`` with the scene-wide stretch; invalid pixels black."""
        rgb = self.read(window).to_rgb8()
        if self._uses_mask_band:
            rgb[~self.valid_mask(window)] = 0
        return rgb

    def valid_mask(self, window: Window | None = None) -> np.ndarray:
        """``(rows, cols)`` bool for ``window``: True where the pixel holds data.

        A pixel is invalid where every display band is nodata or NaN (the rule of
        :attr:`GeoImage.valid_mask`), or, for scenes without a nodata value, where the
        file's internal mask or alpha band marks it empty.
        """
        window = self.check_window(window)
        if self._uses_mask_band:
            return self._rio_mask(f"window {window.to_dict()}", window=_rio_window(window)) > 0
        if self.nodata is None and self.dtype.kind != "f":
            self._check_open()
            return np.ones(window.shape, dtype=bool)
        return self.read(window).valid_mask

    # -- statistics ---------------------------------------------------------------------

    @property
    def stretch(self) -> Stretch | None:
        """Scene-wide per-band percentile stretch (all scene bands), ``None`` for uint8 data."""
        if self._stretch is None and not self._stretch_given and self.dtype != np.uint8:
            self._stretch = self.compute_stretch()
            self._stretch_given = True
        return self._stretch

    def stats_shape(self, max_size: int = STATS_MAX_SIZE) -> tuple[int, int]:
        """``(rows, cols)`` of the decimated read used for statistics: the scene itself
        when its long side is at most ``max_size``, else scaled down to ``max_size``."""
        long_side = max(self.width, self.height)
        if long_side <= max_size:
            return self.shape
        scale = max_size / long_side
        return (max(1, int(round(self.height * scale))), max(1, int(round(self.width * scale))))

    def compute_stretch(self, max_size: int = STATS_MAX_SIZE) -> Stretch:
        """Percentile clip per scene band over a decimated read of the whole scene.

        Reads at most ``max_size`` pixels on the long side, one band at a time (GDAL uses
        overviews when the file has them), ignoring nodata, NaN/inf and masked pixels.
        Memory: one ``stats_shape`` band plus its mask. A mostly sparse GeoTIFF is sampled
        from its stored blocks only (:mod:`terramask.io.sparse`): blocks never written are
        no data, and reading them would cost the scene area instead of the data.
        """
        rows, cols = self.stats_shape(max_size)
        lows, highs = [], []
        for band, (values, valid) in enumerate(self._stats_bands((rows, cols)), start=1):
            if self.nodata is not None and not math.isnan(self.nodata):
                valid &= values != self.nodata
            if values.dtype.kind == "f":
                valid &= np.isfinite(values)
            one = compute_stretch(values[None], valid, self.percentiles)
            lows.append(one.low[0])
            highs.append(one.high[0])
            if not valid.any():
                log.warning("%s: band %d holds no valid pixel; it will be shown black", self.path, band)
        log.debug("%s: stretch from a %dx%d read: low=%s high=%s", self.path, cols, rows, lows, highs)
        return Stretch(tuple(lows), tuple(highs), self.percentiles)

    def _stats_bands(self, shape: tuple[int, int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(values, valid)`` of each scene band at ``shape`` (decimated when smaller than
        the scene; from the stored blocks of a mostly sparse GeoTIFF)."""
        decimated = shape != self.shape
        presence = self.block_presence if decimated and not self._uses_mask_band else None
        if presence is not None and self.mostly_sparse:
            pixels, stored = self._sparse_read(list(range(1, self.count + 1)), shape, presence)
            for band in range(self.count):
                yield pixels[band], stored.copy()
            return
        what = "the scene for statistics"
        kwargs = {"out_shape": shape, "resampling": Resampling.nearest} if decimated else {}
        mask = self._rio_mask(what, **kwargs) > 0 if self._uses_mask_band else None
        for band in range(1, self.count + 1):
            values = self._rio_read(what, indexes=band, **kwargs)
            yield values, (np.ones(values.shape, dtype=bool) if mask is None else mask.copy())

    def _sparse_read(self, indexes: list[int], shape: tuple[int, int],
                     presence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`terramask.io.sparse.decimated_read` of the whole scene, errors as SceneError."""
        self._check_open()
        try:
            with quiet_georef():
                return decimated_read(self._ds, indexes, shape, presence, self._fill_value())
        except rasterio.errors.RasterioError as exc:
            raise SceneError(f"{self.path}: cannot read a decimated view of the scene: {gdal_reason(exc)}"
                             f"{self._remote_hint()}") from exc


def _rio_window(window: Window) -> RioWindow:
    return RioWindow(window.col_off, window.row_off, window.width, window.height)


def open_scene(
    path: str | os.PathLike,
    bands: str | tuple[int, ...] | list[int] | None = None,
    percentiles: tuple[float, float] = (2, 98),
    stretch: Stretch | None = None,
) -> Scene:
    """Open a raster scene; use as ``with open_scene(path) as scene:`` to close it.

    ``bands``: 1-based user spec (``"4,3,2"``, ``(4, 3, 2)``, ``"1"``); default the first
    three bands, or the single band repeated. ``percentiles``: stretch clip (low, high).
    ``stretch``: precomputed scene-wide statistics (e.g. from another process) to skip
    computing them.

    Raises :class:`SceneNotFoundError` (missing file), :class:`SceneError` (a directory,
    not a raster, corrupt, unsupported data type), :class:`BandError` (bad band),
    :class:`InputError` (bad percentiles).
    """
    percentiles = validate_percentiles(percentiles)
    dataset, source, name = open_dataset(path)
    try:
        if dataset.count == 0:
            subdatasets = list(dataset.subdatasets or [])
            hint = f"; it holds subdatasets, open one of them, e.g. {redact(subdatasets[0])}" if subdatasets else ""
            raise SceneError(f"{name}: has no raster bands{hint}")
        kinds = {np.dtype(dt).kind for dt in dataset.dtypes}
        if not kinds <= {"u", "i", "f"}:
            raise SceneError(f"{name}: unsupported data type {dataset.dtypes[0]}; use integer or real-valued bands")
        display = parse_bands(bands, dataset.count, source=name)
        return Scene(dataset, source, display, percentiles, stretch)
    except BaseException:
        dataset.close()
        raise

