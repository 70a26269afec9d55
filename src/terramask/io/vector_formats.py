"""Object files at scale: FlatGeobuf and GeoParquet next to GeoPackage, written incrementally.

:func:`open_vector_writer` gives a writer with :class:`terramask.io.vectors.VectorWriter`'s
interface (``open``/``write``/``close``/``abort``, ``count``, atomic rename on close) for

- ``.gpkg`` / ``.geojson``: :class:`~terramask.io.vectors.VectorWriter` itself;
- ``.fgb``: FlatGeobuf (scene CRS, packed R-tree index). GDAL writes FlatGeobuf in one
  go, so features are appended to a staging GeoPackage as they come and streamed into
  the ``.fgb`` at close in Arrow batches (memory: one batch, not the layer);
- ``.parquet``: GeoParquet 1.1 through ``pyarrow`` (GDAL's Parquet driver is often
  missing): one row group per ``write`` call; geometry as WKB in ``geometry``, a
  ``bbox`` struct column (``xmin``, ``ymin``, ``xmax``, ``ymax``) declared as the
  geometry's *covering* so readers can filter row groups by area; CRS as PROJJSON in
  the ``geo`` metadata.

Columns and types are the same in every format (``int`` -> int64, ``float`` -> float64,
``str`` -> string, ``bool`` -> bool), the schema the caller gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import numpy as np
import shapely

from terramask.core.errors import InputError, OutputError
from terramask.core.lazy import require
from terramask.io.atomic import AtomicPath
from terramask.io.vectors import Feature, VectorWriter, _as_feature, _crs_for_ogr, _normalise_schema, _pyproj_crs

#: ``--vector-format`` values and their file suffixes.
VECTOR_FORMATS = {"gpkg": ".gpkg", "fgb": ".fgb", "parquet": ".parquet"}
GEOPARQUET_VERSION = "1.1.0"


class ObjectWriter(Protocol):
    """What the scene sink needs of a vector writer."""

    path: Path

    @property
    def count(self) -> int: ...

    def open(self) -> Any: ...
    def write(self, features: Iterable[Feature | Mapping]) -> int: ...
    def close(self) -> Path: ...
    def abort(self) -> None: ...


def open_vector_writer(path: str | os.PathLike, crs: Any, schema: Mapping[str, Any], *,
                       layer: str | None = None) -> ObjectWriter:
    """A (not yet opened) writer for ``path`` chosen by its suffix (module docstring)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".fgb":
        return FlatGeobufWriter(path, crs, schema, layer=layer)
    if suffix == ".parquet":
        return GeoParquetWriter(path, crs, schema)
    return VectorWriter(path, crs, schema, layer=layer)


class FlatGeobufWriter:
    """FlatGeobuf written at close from a staging GeoPackage filled incrementally."""

    def __init__(self, path: str | os.PathLike, crs: Any, schema: Mapping[str, Any], *,
                 layer: str | None = None) -> None:
        self.path = Path(path)
        self.crs = crs
        self.layer = layer or self.path.stem
        self._stage = VectorWriter(self.path.with_name(f".{self.path.name}.stage.gpkg"), crs, schema, layer=self.layer)
        self._target: AtomicPath | None = None

    @property
    def count(self) -> int:
        return self._stage.count

    def open(self) -> FlatGeobufWriter:
        self._target = AtomicPath(self.path)
        self._stage.open()
        return self

    def write(self, features: Iterable[Feature | Mapping]) -> int:
        return self._stage.write(features)

    def close(self) -> Path:
        import pyogrio.raw

        if self._target is None:
            raise OutputError(f"vector writer for {self.path} was never opened")
        try:
            staged = self._stage.close()
            with pyogrio.raw.open_arrow(staged, layer=self.layer, batch_size=65_536) as (meta, reader):
                pyogrio.raw.write_arrow(reader, self._target.tmp, driver="FlatGeobuf", layer=self.layer,
                                        geometry_name=meta["geometry_name"] or "geometry",
                                        geometry_type=meta["geometry_type"], crs=_crs_for_ogr(self.crs))
            staged.unlink()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, OutputError):
                raise OutputError(f"cannot write {self.path}: {exc}") from exc
            raise
        return self._target.commit()

    def abort(self) -> None:
        self._stage.abort()
        self._stage.path.unlink(missing_ok=True)
        if self._target is not None and not self._target.done:
            self._target.discard()


_ARROW_TYPES = {"int64": "int64", "float64": "float64", "str": "string", "bool": "bool_"}


class GeoParquetWriter:
    """GeoParquet 1.1 with a bbox covering column, one row group per ``write``."""

    def __init__(self, path: str | os.PathLike, crs: Any, schema: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.crs = crs
        self.schema = _normalise_schema(schema)
        self.count = 0
        self._target: AtomicPath | None = None
        self._writer: Any = None
        self._bounds = [np.inf, np.inf, -np.inf, -np.inf]

    def _arrow_schema(self) -> Any:
        pa = require("pyarrow", "parquet")
        fields = [pa.field(name, getattr(pa, _ARROW_TYPES[kind])()) for name, kind in self.schema.items()]
        bbox = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
        return pa.schema(fields + [pa.field("geometry", pa.binary()), pa.field("bbox", bbox)])

    def _geo_metadata(self) -> dict:
        pcrs = _pyproj_crs(self.crs)
        column = {
            "encoding": "WKB",
            "geometry_types": ["MultiPolygon"],
            "crs": None if pcrs is None else pcrs.to_json_dict(),
            "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
        }
        if np.isfinite(self._bounds).all():
            column["bbox"] = [float(v) for v in self._bounds]
        return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}

    def open(self) -> GeoParquetWriter:
        pq = require("pyarrow.parquet", "parquet", "pyarrow")
        self._target = AtomicPath(self.path)
        schema = self._arrow_schema()
        # The footer's "geo" metadata is written at close, with the bounds of every row.
        self._schema = schema
        try:
            self._writer = pq.ParquetWriter(str(self._target.tmp), schema, compression="zstd")
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        return self

    def write(self, features: Iterable[Feature | Mapping]) -> int:
        pa = require("pyarrow", "parquet")
        if self._writer is None:
            raise OutputError(f"vector writer for {self.path} is not open")
        feats = [_as_feature(f) for f in features]
        if not feats:
            return 0
        for feat in feats:
            extra = set(feat.properties) - set(self.schema)
            if extra:
                raise InputError(f"properties {sorted(extra)} are not in the schema of {self.path} ({list(self.schema)})")
        geoms = [None if f.geometry is None else shapely.force_2d(_multi(f.geometry)) for f in feats]
        bounds = np.array([[np.nan] * 4 if g is None else shapely.bounds(g) for g in geoms], dtype=float)
        if np.isfinite(bounds).any():
            self._bounds = [min(self._bounds[0], np.nanmin(bounds[:, 0])), min(self._bounds[1], np.nanmin(bounds[:, 1])),
                            max(self._bounds[2], np.nanmax(bounds[:, 2])), max(self._bounds[3], np.nanmax(bounds[:, 3]))]
        columns = {name: [_value(f.properties.get(name), kind, name) for f in feats] for name, kind in self.schema.items()}
        columns["geometry"] = [None if g is None else shapely.to_wkb(g) for g in geoms]
        columns["bbox"] = [None if not np.isfinite(b).all() else dict(zip(("xmin", "ymin", "xmax", "ymax"), map(float, b),
                                                                         strict=True)) for b in bounds]
        table = pa.Table.from_pydict(columns, schema=self._schema)
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        self.count += len(feats)
        return len(feats)

    def close(self) -> Path:
        if self._target is None or self._writer is None:
            raise OutputError(f"vector writer for {self.path} was never opened")
        try:
            self._writer.add_key_value_metadata({"geo": json.dumps(self._geo_metadata())})
            self._writer.close()
            self._writer = None
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # pragma: no cover - closing a broken writer
                pass
            self._writer = None
        if self._target is not None and not self._target.done:
            self._target.discard()


def _multi(geom: Any) -> Any:
    return shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom


def _value(value: Any, kind: str, name: str) -> Any:
    if value is None or (isinstance(value, float) and kind != "float64" and np.isnan(value)):
        return None
    try:
        if kind == "int64":
            return int(value)
        if kind == "float64":
            return float(value)
        if kind == "bool":
            return bool(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"attribute {name!r} cannot be stored as {kind}: {exc}") from exc
