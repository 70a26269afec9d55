"""Coordinate reference systems: parse user CRS options and move coordinates between CRSs.

Coordinates are always ``(x, y)`` = (easting, northing) or (longitude, latitude)
(pyproj ``always_xy=True``), whatever the axis order the CRS definition declares.
CRSs are passed around as strings: ``"EPSG:N"`` when the CRS has an EPSG code, else WKT.

Every failure is an :class:`InputError`: an unknown CRS names the value; a pair of CRSs
without a transformation between them (e.g. a Mars CRS and an Earth one) names both.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyproj
from pyproj.exceptions import CRSError, ProjError

from terramask.core.errors import InputError

LONLAT = "EPSG:4326"

_PIXEL_WORDS = {"pixel", "pixels", "px", "image"}
_LONLAT_WORDS = {"lonlat", "lon/lat", "lon,lat", "wgs84", "epsg:4326", "ogc:crs84", "crs84"}
_SCENE_WORDS = {"scene", "map", "world"}

_HINT = "use pixel, lonlat, scene (the scene's CRS) or an EPSG code like EPSG:32633"


@lru_cache(maxsize=64)
def _crs(value: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(value)
    except (CRSError, ProjError, TypeError, ValueError) as exc:
        short = value if len(value) <= 80 else value[:77] + "..."
        raise InputError(f"unknown CRS {short!r}: {' '.join(str(exc).split())}; {_HINT}") from None


def normalize_crs(value) -> str:
    """Any CRS pyproj understands (string, EPSG int, pyproj/rasterio CRS) -> ``"EPSG:N"`` or WKT.

    Raises :class:`InputError` for an unknown CRS.
    """
    if value is None:
        raise InputError(f"no CRS given; {_HINT}")
    if not isinstance(value, str):
        if hasattr(value, "to_wkt"):
            value = value.to_wkt()
        elif isinstance(value, int):
            value = f"EPSG:{value}"
        else:
            raise InputError(f"cannot interpret {value!r} as a CRS; {_HINT}")
    crs = _crs(value.strip())
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def is_lonlat(crs: str | None) -> bool:
    """Whether ``crs`` is WGS 84 longitude/latitude (EPSG:4326 or OGC:CRS84)."""
    if crs is None:
        return False
    return _crs(crs).equals(_crs(LONLAT), ignore_axis_order=True)


def crs_equal(a: str | None, b: str | None) -> bool:
    """Whether two CRS strings describe the same CRS (axis order ignored; ``None`` only equals ``None``)."""
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    return _crs(a).equals(_crs(b), ignore_axis_order=True)


def parse_crs_option(value: str | None, scene_crs: str | None = None) -> tuple[str, str | None]:
    """A CLI ``--crs`` value -> ``(kind, crs)``.

    - ``pixel`` (default when ``value`` is ``None``) -> ``("pixel", None)``: scene pixel coordinates
    - ``lonlat`` / ``EPSG:4326`` / ``OGC:CRS84`` -> ``("lonlat", "EPSG:4326")``
    - ``scene`` / ``map`` -> ``("world", scene_crs)``: the scene's own CRS (``None`` when
      ``scene_crs`` is not known yet; :func:`terramask.io.prompt_frames.to_scene_pixels`
      then uses the scene's CRS)
    - ``EPSG:N``, WKT, PROJ strings -> ``("world", "EPSG:N" or WKT)``

    Raises :class:`InputError` for an unknown CRS.
    """
    if value is None or not str(value).strip():
        return ("pixel", None)
    text = str(value).strip()
    word = text.lower()
    if word in _PIXEL_WORDS:
        return ("pixel", None)
    if word in _LONLAT_WORDS:
        return ("lonlat", LONLAT)
    if word in _SCENE_WORDS:
        return ("world", scene_crs)
    crs = normalize_crs(text)
    if is_lonlat(crs):
        return ("lonlat", LONLAT)
    return ("world", crs)


def prompt_frame(value: str | None, scene_crs: str | None = None) -> tuple[str, str | None]:
    """Like :func:`parse_crs_option` but in :class:`terramask.core.Prompts` frame words:
    ``("scene", None)``, ``("lonlat", "EPSG:4326")`` or ``("world", crs)``."""
    kind, crs = parse_crs_option(value, scene_crs)
    return ("scene", None) if kind == "pixel" else (kind, crs)


def _no_transformation(src: str, dst: str, exc: BaseException) -> InputError:
    """The error for a CRS pair PROJ cannot transform between, with PROJ's reason in short."""
    reason = " ".join(str(exc).split()).removeprefix("Error creating Transformer from CRS.: ")
    reason = reason.removeprefix("(Internal Proj Error: ").removesuffix(")")
    reason = reason.removeprefix("proj_create_operations: ").split(" You may override")[0].rstrip(".")
    return InputError(f"cannot transform coordinates from {_short(src)} to {_short(dst)}: {reason}")


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    """The ``src -> dst`` transformer; :class:`InputError` naming both CRSs when PROJ has none."""
    source, target = _crs(src), _crs(dst)
    try:
        return pyproj.Transformer.from_crs(source, target, always_xy=True)
    except (CRSError, ProjError) as exc:
        raise _no_transformation(src, dst, exc) from None


def transform_xy(xy: np.ndarray, src_crs: str, dst_crs: str) -> np.ndarray:
    """``(N, 2)`` ``(x, y)`` in ``src_crs`` -> ``(N, 2)`` float64 in ``dst_crs`` (always x, y order).

    Raises :class:`InputError` for an unknown CRS, or naming the first coordinate that
    cannot be represented in ``dst_crs`` (e.g. a latitude beyond 90°).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if crs_equal(src_crs, dst_crs):
        return xy.copy()
    transformer = _transformer(src_crs, dst_crs)
    try:
        x, y = transformer.transform(xy[:, 0], xy[:, 1], errcheck=False)
    except ProjError as exc:
        raise _no_transformation(src_crs, dst_crs, exc) from None
    out = np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)], axis=1).reshape(-1, 2)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"coordinate ({xy[i, 0]:.10g}, {xy[i, 1]:.10g}) in {_short(src_crs)} cannot be transformed to {_short(dst_crs)}"
        )
    return out


def transform_bounds(
    bounds: tuple[float, float, float, float], src_crs: str, dst_crs: str, densify: int = 21
) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` in ``src_crs`` -> the bounds of that rectangle in
    ``dst_crs``, following its edges (``densify`` points per edge).

    Raises :class:`InputError` naming both CRSs when the rectangle cannot be transformed.
    """
    if crs_equal(src_crs, dst_crs):
        return (float(bounds[0]), float(bounds[1]), float(bounds[2]), float(bounds[3]))
    try:
        out = _transformer(src_crs, dst_crs).transform_bounds(*bounds, densify_pts=densify)
    except ProjError as exc:
        raise _no_transformation(src_crs, dst_crs, exc) from None
    if not all(np.isfinite(out)):
        raise InputError(f"bounds {tuple(bounds)} in {_short(src_crs)} cannot be transformed to {_short(dst_crs)}")
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))


def _short(crs: str | None) -> str:
    if crs is None:
        return "no CRS"
    if len(crs) <= 40:
        return crs
    try:
        return _crs(crs).name
    except InputError:
        return crs[:37] + "..."
