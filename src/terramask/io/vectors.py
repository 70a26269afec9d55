"""Vector files (GeoPackage, GeoJSON) of features.

Features (:class:`Feature`, polygons with attributes and ground measures) are made in
:mod:`terramask.io.features`; their names are re-exported here for callers that write.

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
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import shapely

from terramask.core.errors import InputError, OutputError
from terramask.io.atomic import AtomicPath, StagedWriter
from terramask.io.features import (  # noqa: F401  (re-exported)
    Feature,
    _crs_for_ogr,
    _pyproj_crs,
    _scalar,
    geometry_measures,
    mask_to_geometry,
    masks_to_features,
)

log = logging.getLogger(__name__)

GPKG_SUFFIXES = (".gpkg",)
GEOJSON_SUFFIXES = (".geojson", ".json")


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
class VectorWriter(StagedWriter):
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
                from pyproj.exceptions import ProjError

                wgs84 = CRS.from_epsg(4326)
                if not pcrs.equals(wgs84, ignore_axis_order=True):
                    try:
                        self._transformer = Transformer.from_crs(pcrs, wgs84, always_xy=True)
                    except ProjError as exc:  # e.g. a planetary CRS: no way to the Earth's lon/lat
                        log.warning("%s: no transformation from %s to EPSG:4326 (%s); GeoJSON coordinates are "
                                    "written in the scene CRS, not lon/lat", self.path, pcrs.name, exc)
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
