"""Prompts read from GeoJSON and GeoPackage files."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import shapely

from terramask.core.errors import InputError, PromptError
from terramask.io.crs import transform_xy
from terramask.io.prompt_files import parse_label, read_prompt_file


def feature(geometry, **properties):
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def point(x, y):
    return {"type": "Point", "coordinates": [x, y]}


def rect(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def write_geojson(path, features, crs=None):
    doc = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def write_gpkg(path, geoms, crs, layer="prompts", labels=None, append=False):
    fields, data = [], []
    if labels is not None:
        fields, data = ["label"], [np.asarray(labels)]
    pyogrio.raw.write(
        str(path), shapely.to_wkb(np.array(geoms, dtype=object)), data, fields,
        layer=layer, driver="GPKG", geometry_type="Unknown", crs=crs, append=append,
    )
    return path


def test_geojson_without_crs_is_lonlat_with_labels_and_boxes(tmp_path):
    path = write_geojson(
        tmp_path / "p.geojson",
        [
            feature(point(-77.5, 24.5), label=1),
            feature(point(-77.6, 24.4), label=0),
            feature(rect(-77.7, 24.2, -77.4, 24.6), name="field"),
        ],
    )
    prompts = read_prompt_file(path)
    assert prompts.frame == "lonlat" and prompts.crs == "EPSG:4326"
    np.testing.assert_allclose(prompts.points, [[-77.5, 24.5], [-77.6, 24.4]])
    assert prompts.labels.tolist() == [1, 0]
    np.testing.assert_allclose(prompts.boxes, [[-77.7, 24.2, -77.4, 24.6]])


def test_label_words_booleans_and_defaults(tmp_path):
    path = write_geojson(
        tmp_path / "words.geojson",
        [
            feature(point(1, 1), label="object"),
            feature(point(2, 2), label="background"),
            feature(point(3, 3), label="Background "),
            feature(point(4, 4)),  # no label: object
            feature(point(5, 5), label=None),  # null label: object
            feature(point(6, 6), label="0"),
        ],
    )
    assert read_prompt_file(path).labels.tolist() == [1, 0, 0, 1, 1, 0]


def test_boolean_labels(tmp_path):
    path = write_geojson(tmp_path / "bool.geojson", [feature(point(1, 1), label=True), feature(point(2, 2), label=False)])
    assert read_prompt_file(path).labels.tolist() == [1, 0]


def test_multipoint_and_multipolygon(tmp_path):
    path = write_geojson(
        tmp_path / "multi.geojson",
        [
            feature({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}, label=0),
            feature(
                {"type": "MultiPolygon", "coordinates": [rect(0, 0, 1, 1)["coordinates"], rect(5, 6, 7, 9)["coordinates"]]}
            ),
        ],
    )
    prompts = read_prompt_file(path)
    np.testing.assert_allclose(prompts.points, [[1, 2], [3, 4]])
    assert prompts.labels.tolist() == [0, 0]
    np.testing.assert_allclose(prompts.boxes, [[0, 0, 7, 9]])


def test_geojson_with_legacy_crs_member_is_world(tmp_path):
    path = write_geojson(
        tmp_path / "utm.geojson", [feature(point(500100, 4999900), label=1)], crs="urn:ogc:def:crs:EPSG::32633"
    )
    prompts = read_prompt_file(path)
    assert prompts.frame == "world" and prompts.crs == "EPSG:32633"
    np.testing.assert_allclose(prompts.points, [[500100, 4999900]])


def test_geopackage_in_utm(tmp_path):
    path = write_gpkg(
        tmp_path / "p.gpkg",
        [shapely.Point(500010, 4999990), shapely.Point(500020, 4999980), shapely.box(500000, 4999900, 500100, 5000000)],
        "EPSG:32633",
        labels=[1, 0, 1],
    )
    prompts = read_prompt_file(path)
    assert prompts.frame == "world" and prompts.crs == "EPSG:32633"
    np.testing.assert_allclose(prompts.points, [[500010, 4999990], [500020, 4999980]])
    assert prompts.labels.tolist() == [1, 0]
    np.testing.assert_allclose(prompts.boxes, [[500000, 4999900, 500100, 5000000]])


def test_geopackage_layers_are_combined_and_one_can_be_chosen(tmp_path):
    path = tmp_path / "layers.gpkg"
    write_gpkg(path, [shapely.Point(1, 2)], "EPSG:32633", layer="points", labels=[0])
    write_gpkg(path, [shapely.box(0, 0, 10, 10)], "EPSG:32633", layer="boxes", append=False)
    prompts = read_prompt_file(path)
    np.testing.assert_allclose(prompts.points, [[1, 2]])
    np.testing.assert_allclose(prompts.boxes, [[0, 0, 10, 10]])
    only = read_prompt_file(path, layer="boxes")
    assert len(only.points) == 0 and len(only.boxes) == 1


def test_to_crs_reprojects_geometries_before_taking_bounds(tmp_path):
    # a lon/lat triangle: its UTM box is the bounds of the reprojected vertices
    triangle = [[15.0, 45.0], [15.2, 45.0], [15.1, 45.15]]
    path = write_geojson(
        tmp_path / "tri.geojson",
        [feature({"type": "Polygon", "coordinates": [triangle + [triangle[0]]]}), feature(point(15.1, 45.05), label=1)],
    )
    prompts = read_prompt_file(path, to_crs="EPSG:32633")
    assert prompts.frame == "world" and prompts.crs == "EPSG:32633"
    utm = transform_xy(np.array(triangle), "EPSG:4326", "EPSG:32633")
    np.testing.assert_allclose(prompts.boxes[0], [*utm.min(axis=0), *utm.max(axis=0)], atol=1e-6)
    np.testing.assert_allclose(prompts.points, transform_xy(np.array([[15.1, 45.05]]), "EPSG:4326", "EPSG:32633"))


def test_features_without_geometry_are_skipped(tmp_path):
    path = write_geojson(tmp_path / "nullgeom.geojson", [feature(None, label=1), feature(point(1, 2), label=1)])
    assert len(read_prompt_file(path).points) == 1


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="no such prompt file") as info:
        read_prompt_file(tmp_path / "missing.geojson")
    assert "missing.geojson" in str(info.value)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.geojson"
    path.write_text("{ this is not json")
    with pytest.raises(PromptError) as info:
        read_prompt_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_no_usable_features(tmp_path):
    path = write_geojson(tmp_path / "empty.geojson", [])
    with pytest.raises(PromptError) as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_unsupported_geometry(tmp_path):
    path = write_geojson(
        tmp_path / "line.geojson", [feature(point(0, 0)), feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})]
    )
    with pytest.raises(PromptError, match=r"feature 2: unsupported geometry LineString") as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad", [2, "tree", -1, 0.5])
def test_bad_label_names_file_feature_and_value(tmp_path, bad):
    path = write_geojson(tmp_path / "badlabel.geojson", [feature(point(0, 0), label=1), feature(point(1, 1), label=bad)])
    with pytest.raises(PromptError) as info:
        read_prompt_file(path)
    message = str(info.value)
    assert str(path) in message and "feature 2" in message and repr(bad).strip("'") in message


def test_several_boxes_with_points_names_the_file(tmp_path):
    path = write_geojson(
        tmp_path / "mixed.geojson", [feature(point(0.5, 0.5)), feature(rect(0, 0, 1, 1)), feature(rect(2, 2, 3, 3))]
    )
    with pytest.raises(PromptError, match="several boxes") as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_degenerate_polygon(tmp_path):
    path = write_geojson(
        tmp_path / "flat.geojson", [feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]})]
    )
    with pytest.raises(PromptError, match="zero width or height"):
        read_prompt_file(path)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_geopackage_without_crs(tmp_path):
    path = write_gpkg(tmp_path / "nocrs.gpkg", [shapely.Point(1, 2)], None, labels=[1])
    with pytest.raises(PromptError, match="has no CRS") as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_layers_with_different_crs(tmp_path):
    path = tmp_path / "two_crs.gpkg"
    write_gpkg(path, [shapely.Point(1, 2)], "EPSG:32633", layer="a", labels=[1])
    write_gpkg(path, [shapely.Point(1, 2)], "EPSG:32632", layer="b", labels=[1])
    with pytest.raises(PromptError, match="different CRSs"):
        read_prompt_file(path)


def test_unknown_layer(tmp_path):
    path = write_gpkg(tmp_path / "one.gpkg", [shapely.Point(1, 2)], "EPSG:32633", labels=[1])
    with pytest.raises(PromptError) as info:
        read_prompt_file(path, layer="nope")
    assert str(path) in str(info.value)


def test_parse_label_directly():
    assert parse_label(1) == 1 and parse_label(0.0) == 0 and parse_label(np.int64(0)) == 0
    assert parse_label(float("nan")) == 1 and parse_label("") == 1 and parse_label("FG") == 1
    with pytest.raises(InputError, match="label 3"):
        parse_label(3, "cli")
