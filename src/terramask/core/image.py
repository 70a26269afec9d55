"""GeoImage: pixels plus georeference, the input every backend receives via ``to_rgb8``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from affine import Affine

from terramask.core.errors import BandError, InputError
from terramask.core.geometry import Window
from terramask.core.stretch import Stretch, apply_stretch, compute_stretch


def default_bands(count: int) -> tuple[int, ...]:
    """0-based display bands: the first three, or the single band repeated."""
    if count >= 3:
        return (0, 1, 2)
    return (0, 0, 0)


def parse_bands(spec: str | tuple[int, ...] | list[int] | None, count: int, source: str = "scene") -> tuple[int, ...]:
    """User band spec (1-based, e.g. ``"4,3,2"`` or ``(4, 3, 2)``) -> 0-based tuple of 3.

    A single band is repeated three times (grey). Raises :class:`BandError` naming the
    source when a band does not exist.
    """
    if spec is None or spec == "":
        return default_bands(count)
    if isinstance(spec, str):
        try:
            values = [int(v) for v in spec.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise BandError(f"{source}: bands must be comma-separated integers like 4,3,2, got {spec!r}") from None
    else:
        values = [int(v) for v in spec]
    if len(values) not in (1, 3):
        raise BandError(f"{source}: give 1 or 3 bands, got {len(values)} ({spec!r})")
    for v in values:
        if not 1 <= v <= count:
            raise BandError(f"{source}: band {v} does not exist; the scene has {count} band(s), numbered 1..{count}")
    zero_based = tuple(v - 1 for v in values)
    return zero_based * 3 if len(zero_based) == 1 else zero_based


@dataclass(frozen=True, eq=False)
class GeoImage:
    """Pixels ``(bands, rows, cols)`` of a scene or window, with their georeference.

    ``transform`` maps this array's pixel ``(x, y)`` to world coordinates (already shifted
    for a window); ``crs`` is a CRS string (``"EPSG:32618"`` or WKT) or ``None`` for plain
    images; ``nodata`` is the scene nodata value or ``None``. ``window`` says where the
    pixels sit in the scene (``None`` = the whole scene). ``stretch`` holds scene-wide
    statistics for non-uint8 data (computed by :mod:`terramask.io` from the whole scene).
    """

    pixels: np.ndarray
    transform: Affine = field(default_factory=Affine.identity)
    crs: str | None = None
    nodata: float | None = None
    band_names: tuple[str, ...] = ()
    source: str = "<array>"
    window: Window | None = None
    stretch: Stretch | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3:
            raise InputError(f"{self.source}: pixels must be (bands, rows, cols), got shape {self.pixels.shape}")

    @classmethod
    def from_rgb8(cls, rgb: np.ndarray, source: str = "<array>") -> "GeoImage":
        """Wrap an ``(H, W, 3)`` or ``(H, W)`` uint8 array (no georeference)."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = rgb[:, :, None]
        if rgb.ndim != 3 or rgb.shape[2] not in (1, 3, 4):
            raise InputError(f"{source}: expected an HxWx3 image, got shape {rgb.shape}")
        return cls(np.ascontiguousarray(np.moveaxis(rgb[:, :, :3], 2, 0)), source=source)

    @property
    def count(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (int(self.pixels.shape[1]), int(self.pixels.shape[2]))

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def valid_mask(self) -> np.ndarray:
        """``(rows, cols)`` bool: True where any band holds data (not nodata, not NaN)."""
        px = self.pixels
        invalid = np.zeros(self.shape, dtype=bool)
        if px.dtype.kind == "f":
            invalid |= np.isnan(px).all(axis=0)
        if self.nodata is not None and not (isinstance(self.nodata, float) and np.isnan(self.nodata)):
            invalid |= (px == self.nodata).all(axis=0)
        return ~invalid

    def with_stretch(self, stretch: Stretch | None) -> "GeoImage":
        return replace(self, stretch=stretch)

    def to_rgb8(self, bands: tuple[int, ...] | None = None, stretch: Stretch | None = None) -> np.ndarray:
        """``(rows, cols, 3)`` uint8 RGB for the model, nodata pixels black.

        ``bands`` are 0-based indices (3 of them; see :func:`parse_bands`). uint8 data is
        passed through unless a stretch is given; other dtypes use ``stretch``, else the
        image's scene-wide ``self.stretch``, else statistics of these pixels alone.
        """
        bands = tuple(bands) if bands is not None else default_bands(self.count)
        for b in bands:
            if not 0 <= b < self.count:
                raise BandError(f"{self.source}: band {b + 1} does not exist; the scene has {self.count} band(s)")
        chosen = self.pixels[list(bands)]
        valid = self.valid_mask
        stretch = stretch or self.stretch
        if self.pixels.dtype == np.uint8 and stretch is None:
            rgb8 = chosen.copy()
        else:
            if stretch is None:
                stretch = compute_stretch(self.pixels, valid)
            rgb8 = apply_stretch(chosen, stretch, bands)
        rgb8[:, ~valid] = 0
        return np.ascontiguousarray(np.moveaxis(rgb8, 0, 2))
