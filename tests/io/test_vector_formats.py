"""FlatGeobuf and GeoParquet objects: the GeoPackage's columns and geometries, GeoParquet
1.1 metadata with a bbox covering column, nothing under the final name on failure."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pyogrio.raw
import pytest
import shapely

from terramask.core.errors import InputError
from terramask.io.vector_formats import open_vector_writer
from terramask.io.vectors import Feature

SCHEMA = {"id": "int", "class": "str", "predicted_iou": "float", "area_m2": "float"}


def _features(start: int, n: int) -> list[Feature]:
    return [Feature(shapely.box(500_000 + 10 * i, 4_000_000, 500_005 + 10 * i, 4_000_008),
                    {"id": i, "class": None if i % 2 else "field", "predicted_iou": 0.5 + i / 100, "area_m2": 40.0})
            for i in range(start, start + n)]


def _write(path, batches):
    writer = open_vector_writer(path, "EPSG:32633", SCHEMA, layer="objects").open()
    for batch in batches:
        writer.write(batch)
    return writer.close()


@pytest.mark.parametrize("suffix", [".fgb", ".parquet"])
def test_same_columns_and_geometries_as_the_geopackage(tmp_path, suffix):
    batches = [_features(1, 3), [], _features(4, 2)]  # written incrementally, an empty batch too
    gpkg = _write(tmp_path / "objects.gpkg", batches)
    other = _write(tmp_path / f"objects{suffix}", batches)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["objects.gpkg", f"objects{suffix}"])  # no staging
    _, _, g_geoms, g_fields = pyogrio.raw.read(gpkg)
    g_info = pyogrio.read_info(gpkg)
    if suffix == ".fgb":
        info = pyogrio.read_info(other)
        assert list(info["fields"]) == list(g_info["fields"]) and list(info["dtypes"]) == list(g_info["dtypes"])
        assert info["crs"] == g_info["crs"] == "EPSG:32633" and info["features"] == 5
        _, _, geoms, fields = pyogrio.raw.read(other)
        values = {name: list(col) for name, col in zip(info["fields"], fields)}
    else:
        table = pq.read_table(other)
        arrow_types = {"int64": "int64", "float64": "double", "object": "string"}
        assert table.column_names == [*g_info["fields"], "geometry", "bbox"]
        assert [str(table.schema.field(n).type) for n in g_info["fields"]] == \
            [arrow_types[str(d)] for d in g_info["dtypes"]]
        geoms = table.column("geometry").to_pylist()
        values = {name: table.column(name).to_pylist() for name in g_info["fields"]}
    g_values = {name: list(col) for name, col in zip(g_info["fields"], g_fields)}
    order = np.argsort(values["id"])  # FlatGeobuf's spatial index orders features along a Hilbert curve
    values = {k: [v[i] for i in order] for k, v in values.items()}
    geoms = [geoms[i] for i in order]
    for a, b in zip(geoms, g_geoms, strict=True):
        assert shapely.from_wkb(a).equals(shapely.from_wkb(b))
    assert values["id"] == g_values["id"] == [1, 2, 3, 4, 5]
    assert [v or None for v in values["class"]] == [v or None for v in g_values["class"]]
    np.testing.assert_allclose(values["predicted_iou"], g_values["predicted_iou"])


def test_geoparquet_metadata_and_bbox_covering(tmp_path):
    path = _write(tmp_path / "objects.parquet", [_features(0, 2), _features(2, 2)])
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 2  # one per write
    geo = json.loads(pf.schema_arrow.metadata[b"geo"]) if pf.schema_arrow.metadata and b"geo" in \
        pf.schema_arrow.metadata else json.loads(pf.metadata.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["MultiPolygon"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 32633}
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert column["bbox"] == [500_000.0, 4_000_000.0, 500_035.0, 4_000_008.0]
    bbox = pq.read_table(path).column("bbox").to_pylist()
    assert bbox[1] == {"xmin": 500_010.0, "ymin": 4_000_000.0, "xmax": 500_015.0, "ymax": 4_000_008.0}


@pytest.mark.parametrize("suffix", [".fgb", ".parquet"])
def test_bad_property_leaves_no_file(tmp_path, suffix):
    writer = open_vector_writer(tmp_path / f"objects{suffix}", "EPSG:32633", SCHEMA).open()
    with pytest.raises(InputError, match="not in the schema"):
        writer.write([Feature(shapely.box(0, 0, 1, 1), {"id": 1, "colour": "red"})])
    writer.abort()
    assert list(tmp_path.iterdir()) == []
