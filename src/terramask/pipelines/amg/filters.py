"""Size filters for automatic masks, in ground units when the scene has a CRS.

``--min-area 20m2``, ``--max-area 5ha``, ``--min-area 150px``: :func:`parse_area` reads
the text (units ``px``, ``m2``/``m²``/``sqm``, ``ha``, ``km2``; a bare number is pixels),
:func:`area_to_pixels` converts ground areas with the area of one pixel at the scene
centre (projected CRSs in their linear unit, geographic CRSs geodesically), and
:func:`filter_by_area` keeps the masks inside the range.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from affine import Affine

from terramask.core.errors import InputError

_UNITS = {
    "px": ("px", 1.0),
    "pixel": ("px", 1.0),
    "pixels": ("px", 1.0),
    "m2": ("m2", 1.0),
    "m²": ("m2", 1.0),
    "sqm": ("m2", 1.0),
    "ha": ("m2", 1.0e4),
    "km2": ("m2", 1.0e6),
    "km²": ("m2", 1.0e6),
}
_PATTERN = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z²][a-zA-Z²0-9]*)?\s*")


@dataclass(frozen=True)
class AreaSpec:
    """An area as the user gave it: ``value`` in ``unit`` (``px`` or ``m2``) and the text."""

    value: float
    unit: str
    text: str

    @property
    def is_ground(self) -> bool:
        return self.unit == "m2"


def parse_area(text: str | float | int, option: str = "--min-area") -> AreaSpec:
    """``"20m2"``, ``"5ha"``, ``"0.2km2"``, ``"150px"``, ``"150"`` -> :class:`AreaSpec`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{option} {text!r}: an area must be a non-negative number")
        return AreaSpec(value, "px", str(text))
    m = _PATTERN.fullmatch(str(text))
    unit_text = (m.group(2) or "").lower() if m else ""
    if not m or (unit_text and unit_text not in _UNITS):
        raise InputError(
            f"{option} {text!r}: give a number with a unit, e.g. 20m2, 5ha, 0.1km2 or 150px (no unit = pixels)"
        )
    unit, factor = _UNITS.get(unit_text, ("px", 1.0))
    return AreaSpec(float(m.group(1)) * factor, unit, str(text))


def pixel_area_m2(transform: Affine | None, crs: str | None, shape: tuple[int, int]) -> float | None:
    """Ground area of one pixel at the scene centre in m², or ``None`` without a usable CRS."""
    if crs is None or transform is None:
        return None
    import shapely.geometry

    from terramask.io.vectors import geometry_measures

    cy, cx = shape[0] // 2, shape[1] // 2
    corners = [transform @ (cx + dx, cy + dy) for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
    measures = geometry_measures(shapely.geometry.Polygon(corners), crs, transform)
    area = measures.get("area_m2")
    return float(area) if area else None


def area_to_pixels(spec: AreaSpec | None, transform: Affine | None, crs: str | None, shape: tuple[int, int],
                   option: str = "--min-area") -> float | None:
    """Pixels of an :class:`AreaSpec` on a grid (``None`` passes through)."""
    if spec is None:
        return None
    if not spec.is_ground:
        return spec.value
    px = pixel_area_m2(transform, crs, shape)
    if px is None:
        raise InputError(
            f"{option} {spec.text}: ground units need a georeferenced scene with a CRS; "
            f"this scene has none, give the area in pixels (e.g. {option} 100px)"
        )
    return spec.value / px


def area_keep(areas: np.ndarray, min_px: float | None, max_px: float | None) -> np.ndarray:
    """``(N,)`` bool: ``min_px <= area <= max_px`` (either bound optional)."""
    areas = np.asarray(areas)
    keep = np.ones(len(areas), dtype=bool)
    if min_px is not None:
        keep &= areas >= min_px
    if max_px is not None:
        keep &= areas <= max_px
    return keep


def check_range(min_px: float | None, max_px: float | None, min_text: str = "", max_text: str = "") -> None:
    if min_px is not None and max_px is not None and min_px > max_px:
        raise InputError(f"--min-area {min_text or min_px} is larger than --max-area {max_text or max_px}")
