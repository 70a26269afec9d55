"""Masks -> polygons in world coordinates, and vector files (GeoPackage, GeoJSON).

A :class:`Feature` is one object: a shapely ``Polygon``/``MultiPolygon`` in the grid's
CRS (world frame) and a dict of attributes. :func:`masks_to_features` polygonises the
masks of a :class:`MaskSet` through its transform and adds ground measures:

- projected CRS: ``area_m2`` and ``perimeter_m`` (CRS units converted to metres);
- geographic CRS: geodesic ``area_m2`` and ``perimeter_m`` on the CRS ellipsoid;
- no CRS (or a CRS without known units): ``area_px`` and ``perimeter_px``.

:func:`geometry_measures` gives the same measures for any world-frame polygon (objects
merged across tiles).

:func:`write_vector` / :class:`VectorWriter` pick the format by suffix:

- ``.gpkg``: GeoPackage in the scene CRS (one layer, default name = file stem), polygons
  promoted to ``MultiPolygon`` so the layer has one geometry type;
- ``.geojson`` / ``.json``: RFC 7946 GeoJSON, reprojected to EPSG:4326 with lon/lat
  order and counter-clockwise exteriors. Without a CRS the coordinates are written as
  they are (grid frame) with a warning, since no reprojection is possible.

Files are written to a temporary name and renamed when complete; an empty feature list
still gives a valid file with the schema.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes as rio_shapes

from terramask.core.errors import InputError, OutputError
from terramask.core.frames import pixel_area
from terramask.core.maskset import MaskSet
from terramask.io.atomic import AtomicPath

log = logging.getLogger(__name__)

GPKG_SUFFIXES = (".gpkg",)
GEOJSON_SUFFIXES = (".geojson", ".json")


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
_TYPES = {"int": "int64", "int64": "int64", "int32": "int64", "float": "float64", "float64": "float64",
          "float32": "float64", "str": "str", "string": "str", "object": "str", "bool": "bool"}


def _normalise_schema(schema: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, kind in schema.items():
        key = kind if isinstance(kind, str) else np.dtype(kind).name
        if key not in _TYPES:
            raise InputError(f"schema type for {name!r} must be int, float, str or bool, got {kind!r}")
        out[str(name)] = _TYPES[key]
    return out


def _infer_schema(features: Sequence[Feature]) -> dict[str, str]:
    kinds: dict[str, set] = {}
    for feat in features:
        for name, value in feat.properties.items():
            s = kinds.setdefault(name, set())
            if value is not None:
                s.add(type(_scalar(value)))
    schema = {}
    for name, types in kinds.items():
        if types <= {bool}:
            schema[name] = "bool" if types else "float64"
        elif types <= {int, bool}:
            schema[name] = "int64"
        elif types <= {int, float, bool}:
            schema[name] = "float64"
        else:
            schema[name] = "str"
    return schema


def _as_feature(obj) -> Feature:
    if isinstance(obj, Feature):
        return obj
    if isinstance(obj, Mapping) and "geometry" in obj:
        geom = obj["geometry"]
        if isinstance(geom, Mapping):
            geom = shapely.geometry.shape(geom)
        return Feature(geom, dict(obj.get("properties") or {}))
    if hasattr(obj, "__geo_interface__"):
        return _as_feature(obj.__geo_interface__)
    raise InputError(f"not a feature: {type(obj).__name__} (need Feature or a GeoJSON-like mapping)")


def _driver_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in GPKG_SUFFIXES:
        return "GPKG"
    if suffix in GEOJSON_SUFFIXES:
        return "GeoJSON"
    raise InputError(f"unsupported vector format {path.suffix!r} for {path}: use .gpkg or .geojson")


# -- writers ---------------------------------------------------------------------------
class VectorWriter:
    """Stream features into a GeoPackage or GeoJSON file, renamed into place on close.

    ``with VectorWriter(path, crs, schema) as w: w.write(features)`` — call ``write`` any
    number of times (features are not kept in memory). ``crs`` is the CRS of the
    geometries (EPSG code, WKT or None). ``schema`` maps field -> ``int``/``float``/
    ``str``/``bool``; without it the first non-empty batch decides. Properties missing
    from a feature are written as null; properties not in the schema are an error.
    On an exception inside the ``with`` block no file is left behind.
    """

    def __init__(self, path: str | os.PathLike, crs=None, schema: Mapping[str, Any] | None = None, *,
                 layer: str | None = None, geometry_type: str = "MultiPolygon") -> None:
        self.path = Path(path)
        self.driver = _driver_for(self.path)
        self.crs = crs
        self.layer = layer or self.path.stem
        self.geometry_type = geometry_type
        self.schema: dict[str, str] | None = _normalise_schema(schema) if schema is not None else None
        self.count = 0
        self._target: AtomicPath | None = None
        self._fh: Any = None
        self._gpkg_created = False
        self._transformer: Any = None

    def __enter__(self) -> "VectorWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> "VectorWriter":
        if self._target is not None:
            raise OutputError(f"vector writer for {self.path} was already opened")
        self._target = AtomicPath(self.path)
        if self.driver == "GeoJSON":
            pcrs = _pyproj_crs(self.crs)
            if pcrs is None:
                log.warning("%s: no CRS, GeoJSON coordinates are written in the grid frame, not lon/lat", self.path)
            else:
                from pyproj import CRS, Transformer

                wgs84 = CRS.from_epsg(4326)
                if not pcrs.equals(wgs84, ignore_axis_order=True):
                    self._transformer = Transformer.from_crs(pcrs, wgs84, always_xy=True)
            try:
                self._fh = open(self._target.tmp, "w", encoding="utf-8")
                head = {"type": "FeatureCollection", "name": self.layer}
                self._fh.write(json.dumps(head)[:-1] + ', "features": [\n')
            except OSError as exc:
                self.abort()
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return self

    # -- GeoJSON -----------------------------------------------------------------------
    def _to_lonlat(self, geom):
        if geom is None:
            return None
        if self._transformer is not None:
            tr = self._transformer

            def project(xy: np.ndarray) -> np.ndarray:
                x, y = tr.transform(xy[:, 0], xy[:, 1])
                return np.column_stack([x, y])

            geom = shapely.transform(geom, project)
        return shapely.orient_polygons(geom, exterior_cw=False)

    def _write_geojson(self, feats: Sequence[Feature]) -> None:
        parts = []
        for feat in feats:
            props = {name: _scalar(feat.properties.get(name)) for name in self.schema or {}}
            geom = self._to_lonlat(feat.geometry)
            geom_json = "null" if geom is None else shapely.to_geojson(geom)
            body = json.dumps(props, allow_nan=False, default=_json_value)
            parts.append(f'{{"type": "Feature", "properties": {body}, "geometry": {geom_json}}}')
        if parts:
            sep = ",\n" if self.count else ""
            self._fh.write(sep + ",\n".join(parts))

    # -- GeoPackage --------------------------------------------------------------------
    def _field_arrays(self, feats: Sequence[Feature]):
        data, masks = [], []
        for name, kind in (self.schema or {}).items():
            values = [_scalar(f.properties.get(name)) for f in feats]
            null = np.array([v is None for v in values], dtype=bool)
            if kind == "str":
                arr = np.array([None if v is None else str(v) for v in values], dtype=object)
            else:
                fill = {"int64": 0, "float64": np.nan, "bool": False}[kind]
                try:
                    arr = np.array([fill if v is None else v for v in values], dtype=kind)
                except (TypeError, ValueError) as exc:
                    raise InputError(f"attribute {name!r} cannot be stored as {kind}: {exc}") from exc
            data.append(arr)
            masks.append(null if null.any() and kind != "float64" else None)
        return data, masks

    def _write_gpkg(self, feats: Sequence[Feature]) -> None:
        import pyogrio.raw
        from pyogrio.errors import DataLayerError, DataSourceError

        geoms = np.array([None if f.geometry is None else shapely.to_wkb(f.geometry) for f in feats], dtype=object)
        data, masks = self._field_arrays(feats)
        if self._target is None:
            raise OutputError(f"vector writer for {self.path} is not open")
        try:
            pyogrio.raw.write(
                self._target.tmp, geoms, data, list(self.schema or {}), field_mask=masks, layer=self.layer,
                driver="GPKG", geometry_type=self.geometry_type, crs=_crs_for_ogr(self.crs),
                promote_to_multi=self.geometry_type.startswith("Multi"), append=self._gpkg_created,
            )
        except (DataSourceError, DataLayerError, OSError, RuntimeError) as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        self._gpkg_created = True

    # -- public ------------------------------------------------------------------------
    def write(self, features: Iterable[Feature | Mapping]) -> int:
        """Append features; returns how many were written by this call."""
        if self._target is None or self._target.done:
            raise OutputError(f"vector writer for {self.path} is not open")
        feats = [_as_feature(f) for f in features]
        if not feats:
            return 0
        if self.schema is None:
            self.schema = _infer_schema(feats)
        for feat in feats:
            extra = set(feat.properties) - set(self.schema)
            if extra:
                raise InputError(f"properties {sorted(extra)} are not in the schema of {self.path} ({list(self.schema)})")
        try:
            if self.driver == "GeoJSON":
                self._write_geojson(feats)
            else:
                self._write_gpkg(feats)
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.count += len(feats)
        return len(feats)

    def close(self) -> Path:
        """Finish the file and rename it into place; returns the final path."""
        if self._target is None:
            raise OutputError(f"vector writer for {self.path} was never opened")
        if self._target.done:
            return self.path
        try:
            if self.schema is None:
                self.schema = {}
            if self.driver == "GeoJSON":
                self._fh.write("\n]}\n")
                self._fh.close()
                self._fh = None
            elif not self._gpkg_created:
                self._write_gpkg([])
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Drop the file being written; the final path is untouched."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # pragma: no cover
                pass
            self._fh = None
        if self._target is not None and not self._target.done:
            self._target.discard()


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_vector(path: str | os.PathLike, features: Iterable[Feature | Mapping], crs=None, *,
                 layer: str | None = None, schema: Mapping[str, Any] | None = None,
                 geometry_type: str = "MultiPolygon") -> Path:
    """Write features to ``.gpkg`` (scene CRS) or ``.geojson`` (EPSG:4326), atomically.

    ``features`` are :class:`Feature` objects or GeoJSON-like mappings whose geometry is
    in ``crs``. Pass ``schema`` to type fields of an empty list (default: inferred).
    Returns the path.
    """
    with VectorWriter(path, crs, schema, layer=layer, geometry_type=geometry_type) as writer:
        writer.write(features)
    return writer.path
