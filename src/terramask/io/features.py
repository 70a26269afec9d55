"""Masks -> polygons in world coordinates, with ground measures.

A :class:`Feature` is one object: a shapely ``Polygon``/``MultiPolygon`` in the grid's
CRS (world frame) and a dict of attributes. :func:`masks_to_features` polygonises the
masks of a :class:`MaskSet` through its transform and adds ground measures:

- projected CRS: ``area_m2`` and ``perimeter_m`` (CRS units converted to metres);
- geographic CRS: geodesic ``area_m2`` and ``perimeter_m`` on the CRS ellipsoid;
- no CRS (or a CRS without known units): ``area_px`` and ``perimeter_px``.

:func:`geometry_measures` gives the same measures for any world-frame polygon (objects
merged across tiles). Writing features to files is :mod:`terramask.io.vectors`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes as rio_shapes

from terramask.core.errors import InputError
from terramask.core.frames import pixel_area
from terramask.core.maskset import MaskSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feature:
    """One object: ``geometry`` (shapely, world frame of ``crs`` of its file; None when
    the mask was empty) and ``properties`` (str -> JSON-able scalar)."""

    geometry: Any
    properties: dict = field(default_factory=dict)

    @property
    def __geo_interface__(self) -> dict:
        geom = None if self.geometry is None else json.loads(shapely.to_geojson(self.geometry))
        return {"type": "Feature", "geometry": geom, "properties": dict(self.properties)}


# -- CRS helpers ----------------------------------------------------------------------
def _pyproj_crs(crs):
    if crs is None or crs == "":
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") and not isinstance(crs, CRS) else crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise InputError(f"invalid CRS {str(crs)[:80]!r}: {exc}") from exc


def _crs_for_ogr(crs) -> str | None:
    """A CRS string for OGR: ``AUTH:CODE`` when the CRS has one, else WKT."""
    pcrs = _pyproj_crs(crs)
    if pcrs is None:
        return None
    auth = pcrs.to_authority(min_confidence=100)
    return f"{auth[0]}:{auth[1]}" if auth else pcrs.to_wkt()


def _linear_unit_to_metres(pcrs) -> float | None:
    for axis in pcrs.axis_info:
        factor = axis.unit_conversion_factor
        if factor and axis.unit_name not in ("degree", "radian", "grad", "unknown"):
            return float(factor)
    return None


# -- polygonising ----------------------------------------------------------------------
def mask_to_geometry(mask: np.ndarray, transform: Affine | None = None, *, connectivity: int = 4):
    """``(H, W)`` bool -> ``Polygon``/``MultiPolygon`` of its pixels (None if empty).

    Polygons follow pixel edges; with ``transform`` they are in its world frame,
    otherwise in pixel coordinates ``(x=col, y=row)``. Only the mask's bounding box is
    traced, so the cost grows with the object, not the grid.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InputError(f"mask must be (H, W), got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
    t = (transform or Affine.identity()) @ Affine.translation(int(x0), int(y0))
    polys = [
        shapely.geometry.shape(geom)
        for geom, value in rio_shapes(crop.view(np.uint8), mask=crop, transform=t, connectivity=connectivity)
        if value
    ]
    geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    if not geom.is_valid:
        geom = shapely.make_valid(shapely.union_all(polys))
    return geom


def _column(name: str, values, n: int) -> list:
    arr = np.asarray(values)
    if arr.ndim == 0 or len(arr) != n:
        raise InputError(f"attribute {name!r} has length {arr.size if arr.ndim == 0 else len(arr)}, expected {n}")
    if arr.ndim > 1:
        raise InputError(f"attribute {name!r} has per-object shape {arr.shape[1:]}; attributes must be scalars")
    return [_scalar(v) for v in arr]


def _scalar(value):
    if isinstance(value, np.float32):
        # Shortest decimal that round-trips the float32 (0.9, not 0.8999999761581421).
        value = float(str(value))
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def masks_to_features(maskset: MaskSet, attributes: Mapping[str, Sequence] | None = None,
                      simplify_tolerance: float | None = None, *, connectivity: int = 4) -> list[Feature]:
    """One :class:`Feature` per mask of ``maskset``, in its grid's world frame.

    ``attributes`` maps column name -> length-N values (default: ``id`` 1..N and
    ``score``); measures are appended (see the module docstring; areas and perimeters
    are those of the unsimplified pixel polygons). ``simplify_tolerance`` (CRS units)
    simplifies geometries topology-preservingly. Empty masks give ``geometry=None``
    and zero measures.
    """
    if not isinstance(maskset, MaskSet):
        raise InputError(f"expected a MaskSet, got {type(maskset).__name__}")
    n = len(maskset)
    if attributes is None:
        attributes = {"id": list(range(1, n + 1)), "score": list(maskset.scores)}
    cols = {name: _column(name, values, n) for name, values in attributes.items()}
    measure = _Measurer(maskset.crs, maskset.transform)
    counts = maskset.areas
    features = []
    for i in range(n):
        geom = mask_to_geometry(maskset.masks[i], maskset.transform, connectivity=connectivity)
        props = {name: col[i] for name, col in cols.items()}
        props.update(measure(geom, int(counts[i])))
        if geom is not None and simplify_tolerance:
            geom = shapely.simplify(geom, float(simplify_tolerance), preserve_topology=True)
        features.append(Feature(geom, props))
    return features


class _Measurer:
    """Ground measures of world-frame geometries of one grid (see :func:`geometry_measures`)."""

    def __init__(self, crs, transform: Affine | None) -> None:
        pcrs = _pyproj_crs(crs)
        self.geod = None
        self.unit = None
        if pcrs is not None and pcrs.is_geographic:
            self.geod = pcrs.get_geod()
        elif pcrs is not None and pcrs.is_projected:
            self.unit = _linear_unit_to_metres(pcrs)
            if self.unit is None:
                log.warning("CRS %s has no known linear unit; areas are given in pixels", pcrs.name)
        self.px_area = pixel_area(transform or Affine.identity()) or 1.0
        self.px_scale = math.sqrt(self.px_area)

    def __call__(self, geom, pixel_count: int | None = None) -> dict:
        if self.geod is not None:
            area, perim = (0.0, 0.0) if geom is None else self.geod.geometry_area_perimeter(geom)
            return {"area_m2": abs(float(area)), "perimeter_m": float(perim)}
        length = 0.0 if geom is None else float(geom.length)
        if pixel_count is None:
            pixel_count = 0 if geom is None else int(round(geom.area / self.px_area))
        if self.unit is not None:
            return {"area_m2": float(pixel_count) * self.px_area * self.unit**2, "perimeter_m": length * self.unit}
        return {"area_px": int(pixel_count), "perimeter_px": length / self.px_scale}


def geometry_measures(geometry, crs, transform: Affine | None = None) -> dict:
    """Ground measures of one world-frame polygon (e.g. an object merged across tiles).

    Returns ``{"area_m2", "perimeter_m"}`` for projected (CRS units converted to metres)
    and geographic (geodesic) CRSs, else ``{"area_px", "perimeter_px"}`` using the grid's
    ``transform`` (pixel polygons give whole pixel counts). ``geometry`` None gives zeros.
    """
    return _Measurer(crs, transform)(geometry)


# -- schema ----------------------------------------------------------------------------
