"""Polygons from masks and vector files re-read with pyogrio/json: CRS, lon/lat, areas, schema."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from terramask.core.errors import InputError
from terramask.core.maskset import MaskSet
from terramask.io.vectors import Feature, VectorWriter, mask_to_geometry, masks_to_features, write_vector

UTM = "EPSG:32618"
T = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)  # 0.5 m pixels near New York


def _masks(shape=(40, 50)):
    rect = np.zeros(shape, bool)
    rect[5:11, 10:20] = True  # 6 x 10 px
    ring = np.zeros(shape, bool)
    ring[20:30, 20:30] = True
    ring[23:26, 23:26] = False  # a hole
    ring[33:36, 40:45] = True  # and an island
    pixel = np.zeros(shape, bool)
    pixel[4, 6] = True
    diagonal = np.zeros(shape, bool)
    diagonal[0, 0] = diagonal[1, 1] = True
    return np.stack([rect, ring, pixel, diagonal])


def _maskset(crs=UTM, transform=T):
    return MaskSet(_masks(), scores=[0.98, 0.9, 0.8, 0.7], transform=transform, crs=crs)


def _read(path, layer=None):
    meta, _, geoms, fields = pyogrio.raw.read(path, layer=layer)
    rows = [dict(zip(meta["fields"], vals)) for vals in zip(*fields)] if len(fields) else []
    return meta, [None if g is None else shapely.from_wkb(g) for g in geoms], rows


def test_geometry_follows_pixel_edges_in_world_coordinates():
    geom = mask_to_geometry(_masks()[0], T)
    assert geom.geom_type == "Polygon" and geom.is_valid
    assert geom.bounds == (583000.0 + 10 * 0.5, 4507000.0 - 11 * 0.5, 583000.0 + 20 * 0.5, 4507000.0 - 5 * 0.5)
    assert geom.area == pytest.approx(60 * 0.25)
    assert mask_to_geometry(np.zeros((4, 4), bool), T) is None
    pixel_frame = mask_to_geometry(_masks()[0])
    assert pixel_frame.bounds == (10.0, 5.0, 20.0, 11.0)


def test_holes_islands_and_diagonal_pixels_give_valid_geometries():
    feats = masks_to_features(_maskset())
    ring, diagonal = feats[1].geometry, feats[3].geometry
    assert ring.geom_type == "MultiPolygon" and len(ring.geoms) == 2 and ring.is_valid
    assert sum(len(p.interiors) for p in ring.geoms) == 1
    assert ring.area == pytest.approx((100 - 9 + 15) * 0.25)
    assert diagonal.is_valid and diagonal.area == pytest.approx(2 * 0.25)


def test_projected_measures_in_metres_and_default_attributes():
    feats = masks_to_features(_maskset())
    counts = _masks().reshape(4, -1).sum(axis=1)
    assert [f.properties["id"] for f in feats] == [1, 2, 3, 4]
    assert feats[0].properties["score"] == 0.98
    for feat, count in zip(feats, counts):
        assert feat.properties["area_m2"] == pytest.approx(count * 0.25)
        assert "area_px" not in feat.properties
    assert feats[0].properties["perimeter_m"] == pytest.approx(2 * (6 + 10) * 0.5)
    assert feats[2].properties["perimeter_m"] == pytest.approx(2.0)


def test_feet_crs_areas_are_converted_to_square_metres():
    ft = 1200 / 3937  # US survey foot
    tr = Affine(2.0, 0.0, 1_000_000.0, 0.0, -2.0, 200_000.0)
    feats = masks_to_features(_maskset("EPSG:2263", tr))
    assert feats[0].properties["area_m2"] == pytest.approx(60 * 4.0 * ft * ft)
    assert feats[0].properties["perimeter_m"] == pytest.approx(2 * (6 + 10) * 2.0 * ft)


def test_geographic_crs_uses_geodesic_measures():
    tr = Affine(0.0001, 0.0, -74.0, 0.0, -0.0001, 40.7)
    feats = masks_to_features(_maskset("EPSG:4326", tr))
    lat = math.radians(40.7 - 8 * 0.0001)
    # Spherical approximation of the 10 x 6 px rectangle: good to well under 1 %.
    r = 6_371_008.8
    width = math.radians(10 * 0.0001) * r * math.cos(lat)
    height = math.radians(6 * 0.0001) * r
    assert feats[0].properties["area_m2"] == pytest.approx(width * height, rel=0.01)
    assert feats[0].properties["perimeter_m"] == pytest.approx(2 * (width + height), rel=0.01)


def test_without_crs_measures_are_in_pixels():
    feats = masks_to_features(MaskSet(_masks()))
    assert feats[0].properties["area_px"] == 60
    assert feats[0].properties["perimeter_px"] == pytest.approx(32.0)
    assert "area_m2" not in feats[0].properties


def test_custom_attributes_and_their_validation():
    ms = _maskset()
    feats = masks_to_features(ms, {"candidate": [1, 2, 3, 4], "label": np.array(["a", "b", "c", "d"]),
                                   "stability": np.array([0.5, np.nan, 1, 2], np.float32)})
    assert feats[1].properties["label"] == "b" and feats[1].properties["stability"] is None
    assert "score" not in feats[0].properties and "area_m2" in feats[0].properties
    with pytest.raises(InputError, match="'x' has length 2, expected 4"):
        masks_to_features(ms, {"x": [1, 2]})
    with pytest.raises(InputError, match="scalars"):
        masks_to_features(ms, {"xy": np.zeros((4, 2))})


def test_simplify_reduces_vertices_but_keeps_measured_area():
    yy, xx = np.mgrid[:80, :80]
    disk = (yy - 40) ** 2 + (xx - 40) ** 2 < 30**2
    ms = MaskSet(disk[None], transform=T, crs=UTM)
    raw = masks_to_features(ms)[0]
    simple = masks_to_features(ms, simplify_tolerance=1.0)[0]
    assert shapely.get_num_coordinates(simple.geometry) < shapely.get_num_coordinates(raw.geometry) / 3
    assert simple.properties["area_m2"] == raw.properties["area_m2"] == pytest.approx(disk.sum() * 0.25)
    assert simple.geometry.is_valid


def test_geopackage_round_trip(tmp_path):
    feats = masks_to_features(_maskset())
    path = write_vector(tmp_path / "objects.gpkg", feats, UTM)
    info = pyogrio.read_info(path)
    assert info["layer_name"] == "objects"
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32618)
    assert info["geometry_type"] == "MultiPolygon" and info["features"] == 4
    assert list(info["fields"]) == ["id", "score", "area_m2", "perimeter_m"]
    assert list(info["dtypes"]) == ["int64", "float64", "float64", "float64"]
    _, geoms, rows = _read(path)
    for geom, row, feat in zip(geoms, rows, feats):
        assert geom.area == pytest.approx(row["area_m2"])
        assert shapely.equals(geom, feat.geometry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects.gpkg"]


def test_geojson_is_lonlat_with_the_right_coordinates(tmp_path):
    feats = masks_to_features(_maskset())
    path = write_vector(tmp_path / "mask.geojson", feats, UTM)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == 4
    pixel = doc["features"][2]  # the single pixel at row 4, col 6
    ring = np.array(pixel["geometry"]["coordinates"][0])
    to_lonlat = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    corners = [(583000 + 6 * 0.5, 4507000 - 4 * 0.5), (583000 + 7 * 0.5, 4507000 - 5 * 0.5)]
    expected = np.array([to_lonlat.transform(x, y) for x, y in corners])
    assert -75 < expected[0, 0] < -73 and 40 < expected[0, 1] < 41  # lon first, then lat
    np.testing.assert_allclose(ring.min(axis=0), expected.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(ring.max(axis=0), expected.max(axis=0), atol=1e-9)
    # RFC 7946: exterior rings counter-clockwise, holes clockwise.
    for feat in doc["features"]:
        geom = shapely.geometry.shape(feat["geometry"])
        for poly in getattr(geom, "geoms", [geom]):
            assert poly.exterior.is_ccw
            assert all(not hole.is_ccw for hole in poly.interiors)
    assert doc["features"][0]["properties"] == feats[0].properties
    # GDAL reads it as EPSG:4326 too.
    assert CRS.from_user_input(pyogrio.read_info(path)["crs"]) == CRS.from_epsg(4326)


def test_geojson_without_crs_keeps_grid_coordinates_and_warns(tmp_path, caplog):
    feats = masks_to_features(MaskSet(_masks()))
    with caplog.at_level(logging.WARNING, logger="terramask.io.vectors"):
        path = write_vector(tmp_path / "m.geojson", feats, None)
    assert "no CRS" in caplog.text
    geom = shapely.geometry.shape(json.loads(path.read_text())["features"][0]["geometry"])
    assert geom.bounds == (10.0, 5.0, 20.0, 11.0)


def test_empty_feature_lists_give_valid_files_with_schema(tmp_path):
    schema = {"id": "int", "score": "float", "name": "str"}
    gpkg = write_vector(tmp_path / "objects.gpkg", [], UTM, schema=schema)
    info = pyogrio.read_info(gpkg)
    assert info["features"] == 0 and list(info["fields"]) == ["id", "score", "name"]
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32618)
    doc = json.loads(write_vector(tmp_path / "objects.geojson", [], UTM, schema=schema).read_text())
    assert doc == {"type": "FeatureCollection", "name": "objects", "features": []}
    assert pyogrio.read_info(tmp_path / "objects.geojson")["features"] == 0


def test_empty_mask_is_written_with_null_geometry(tmp_path):
    masks = _masks()
    masks[1] = False
    feats = masks_to_features(MaskSet(masks, transform=T, crs=UTM))
    assert feats[1].geometry is None and feats[1].properties["area_m2"] == 0
    _, geoms, rows = _read(write_vector(tmp_path / "o.gpkg", feats, UTM))
    assert geoms[1] is None and rows[1]["id"] == 2
    doc = json.loads(write_vector(tmp_path / "o.geojson", feats, UTM).read_text())
    assert doc["features"][1]["geometry"] is None


def test_streaming_writer_appends_batches(tmp_path):
    feats = masks_to_features(_maskset())
    for name in ("tiles.gpkg", "tiles.geojson"):
        with VectorWriter(tmp_path / name, UTM, {"id": int, "score": float, "area_m2": float,
                                                 "perimeter_m": float, "tile": "int"}) as writer:
            for tile in range(3):
                batch = [Feature(f.geometry, {**f.properties, "id": tile * 10 + f.properties["id"], "tile": tile})
                         for f in feats]
                writer.write(batch)
            writer.write([])
            assert not (tmp_path / name).exists()
        _, geoms, rows = _read(tmp_path / name)
        assert [r["id"] for r in rows] == [1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24]
        assert [r["tile"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.geojson", "tiles.gpkg"]


@pytest.mark.parametrize("name", ["o.gpkg", "o.geojson"])
def test_failure_inside_writer_leaves_nothing(tmp_path, name):
    feats = masks_to_features(_maskset())
    with pytest.raises(RuntimeError):
        with VectorWriter(tmp_path / name, UTM) as writer:
            writer.write(feats[:2])
            raise RuntimeError("tile failed")
    with pytest.raises(InputError, match=r"properties \['extra'\] are not in the schema"):
        with VectorWriter(tmp_path / name, UTM) as writer:
            writer.write(feats[:2])
            writer.write([Feature(feats[2].geometry, {**feats[2].properties, "extra": 1})])
    assert list(tmp_path.iterdir()) == []


def test_mappings_and_points_are_accepted(tmp_path):
    features = [{"geometry": {"type": "Point", "coordinates": [583001.0, 4506999.0]}, "properties": {"label": 1}}]
    path = write_vector(tmp_path / "points.gpkg", features, UTM, geometry_type="Point", layer="prompts")
    info = pyogrio.read_info(path, layer="prompts")
    assert info["geometry_type"] == "Point" and info["features"] == 1


def test_unknown_format(tmp_path):
    with pytest.raises(InputError, match="use .gpkg or .geojson"):
        write_vector(tmp_path / "o.shp", [], UTM)


def test_real_building_instances_match_their_source_polygons(rs_data, tmp_path):
    """SpaceNet Atlanta: polygons traced from the rasterised instances land on the
    original building footprints, in the GeoPackage (EPSG:32616) and in the GeoJSON (lon/lat)."""
    import rasterio

    full = rs_data / "spacenet_atlanta_buildings" / "full"
    with rasterio.open(full / "sample_geotiff_buildings_instances.tif") as src:
        inst, transform, crs = src.read(1), src.transform, src.crs.to_string()
    ids = np.unique(inst)
    ids = ids[ids > 0]
    ms = MaskSet(inst[None] == ids[:, None, None], transform=transform, crs=crs)
    feats = masks_to_features(ms, {"id": ids})
    _, truth_geoms, _ = _read(full / "geotiff_labels.geojson")

    def iou(a, b):
        return a.intersection(b).area / a.union(b).area

    _, gpkg_geoms, rows = _read(write_vector(tmp_path / "objects.gpkg", feats, crs))
    ious = [iou(g, truth_geoms[r["id"] - 1]) for g, r in zip(gpkg_geoms, rows)]
    assert min(ious) > 0.5 and np.median(ious) > 0.8
    for r in rows:
        assert r["area_m2"] == pytest.approx(np.count_nonzero(inst == r["id"]) * 0.25)

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    doc = json.loads(write_vector(tmp_path / "objects.geojson", feats, crs).read_text())
    for feat in doc["features"]:
        ours = shapely.geometry.shape(feat["geometry"])
        truth = shapely.transform(truth_geoms[feat["properties"]["id"] - 1],
                                  lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
        assert iou(ours, truth) > 0.5


def test_geometry_measures_of_merged_polygons_match_mask_measures():
    from terramask.io.vectors import geometry_measures

    for crs, tr in [(UTM, T), ("EPSG:4326", Affine(0.0001, 0.0, -74.0, 0.0, -0.0001, 40.7)),
                    (None, Affine(2.0, 0.0, 0.0, 0.0, 2.0, 0.0))]:
        feats = masks_to_features(MaskSet(_masks(), transform=tr, crs=crs), {})
        # Split object 1 in two halves and merge them back, as a tiled run would.
        ring = feats[1].geometry
        minx, miny, maxx, maxy = ring.bounds
        midx = (minx + maxx) / 2
        halves = [ring.intersection(shapely.box(minx, miny, midx, maxy)),
                  ring.intersection(shapely.box(midx, miny, maxx, maxy))]
        merged = shapely.union_all(halves)
        measured = geometry_measures(merged, crs, tr)
        assert measured.keys() == feats[1].properties.keys()
        for key, value in feats[1].properties.items():
            assert measured[key] == pytest.approx(value, rel=1e-9)
    assert geometry_measures(None, UTM) == {"area_m2": 0.0, "perimeter_m": 0.0}


def test_geojson_of_a_planetary_crs_keeps_its_coordinates_and_warns(tmp_path, caplog):
    """Mars has no transformation to the Earth's lon/lat: no ProjError, a warning, the
    coordinates as they are (like the no-CRS case)."""
    feats = masks_to_features(MaskSet(_masks()))
    with caplog.at_level(logging.WARNING, logger="terramask.io.vectors"):
        path = write_vector(tmp_path / "m.geojson", feats, "IAU_2015:49900")
    assert "no transformation" in caplog.text and "EPSG:4326" in caplog.text
    geom = shapely.geometry.shape(json.loads(path.read_text())["features"][0]["geometry"])
    assert geom.bounds == (10.0, 5.0, 20.0, 11.0)
