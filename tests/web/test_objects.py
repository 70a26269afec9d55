"""The object layer over HTTP: accept, classes, re-class, delete, versions (409), undo/redo,
saved as it changes (a restart shows it again), downloads aligned to the scene."""

from __future__ import annotations

import json

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient

INSIDE = {"x": 140, "y": 100}


@pytest.fixture()
def make_client(web_env, tiny_backend, tmp_path):
    """Apps on the blob scene sharing one output folder (a restart = a second app)."""
    from terramask.web.app import create_app

    apps = []

    def make():
        app = create_app(web_env["scene"], tiny_backend, out_dir=tmp_path / "out")
        apps.append(app)
        return TestClient(app), app

    yield make
    for app in apps:
        app.state.terramask.close()


def _click(c, **extra):
    r = c.post("/predict", json={"points": [INSIDE], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _accept(c, pred, candidate=0, class_id=1):
    r = c.post("/objects", json={"session_id": pred["session_id"], "prediction_id": pred["prediction_id"],
                                 "candidate": candidate, "class_id": class_id})
    assert r.status_code == 201, r.text
    return r.json()


def test_accepting_a_candidate_adds_a_polygon_object_saved_in_the_scene_crs(make_client, tmp_path):
    c, app = make_client()
    pred = _click(c)
    layer = _accept(c, pred, candidate=1)
    assert [o["id"] for o in layer["objects"]] == [layer["id"]] == [1]
    obj = layer["objects"][0]
    cand = pred["candidates"][1]
    assert obj["class_id"] == 1 and obj["area_px"] == cand["area_px"] and obj["score"] == pytest.approx(cand["score"])
    assert obj["area_m2"] == pytest.approx(cand["area_m2"])
    xs = [x for ring in obj["outline_px"] for x, _ in ring]
    ys = [y for ring in obj["outline_px"] for _, y in ring]
    x0, y0, x1, y1 = cand["bbox_px"]
    assert (min(xs), min(ys)) == (pytest.approx(x0), pytest.approx(y0))
    gpkg = tmp_path / "out" / "layers" / "blob" / "objects.gpkg"
    meta, _, wkbs, fields = pyogrio.raw.read(gpkg, layer="objects")
    assert "32633" in meta["crs"]
    columns = dict(zip(meta["fields"], fields))
    assert columns["id"].tolist() == [1] and columns["class_name"].tolist() == ["object"]
    assert shapely.from_wkb(wkbs[0]).area == pytest.approx(cand["area_m2"])  # 0.5 m pixels: m² = CRS units²


def test_classes_reclass_and_delete_need_the_current_version(make_client):
    c, _ = make_client()
    pred = _click(c)
    _accept(c, pred)
    roofs = c.post("/classes", json={"name": "roof", "color": "#FF8800"})
    assert roofs.status_code == 201 and roofs.json()["id"] == 2
    assert {"id": 2, "name": "roof", "color": "#ff8800"} in roofs.json()["classes"]
    assert c.post("/classes", json={"name": "Roof", "color": "#000000"}).status_code == 409
    assert c.post("/classes", json={"name": "x", "color": "red"}).status_code == 422
    version = c.get("/objects").json()["objects"][0]["version"]
    moved = c.patch("/objects/1", json={"class_id": 2, "version": version})
    assert moved.status_code == 200 and moved.json()["objects"][0]["class_id"] == 2
    stale = c.patch("/objects/1", json={"class_id": 1, "version": version})  # a tab that did not see the change
    assert stale.status_code == 409 and "changed since" in stale.json()["detail"]
    assert c.delete("/objects/1", params={"version": version}).status_code == 409
    assert c.patch("/objects/1", json={"class_id": 9, "version": moved.json()["objects"][0]["version"]}).status_code == 404
    current = moved.json()["objects"][0]["version"]
    assert c.delete("/objects/1", params={"version": current}).json()["objects"] == []
    gone = c.delete("/objects/1", params={"version": current})
    assert gone.status_code == 404 and "object 1" in gone.json()["detail"]


def test_undo_and_redo_over_the_layer(make_client):
    c, _ = make_client()
    pred = _click(c)
    first = _accept(c, pred)["objects"][0]
    deleted = c.delete("/objects/1", params={"version": first["version"]}).json()
    assert deleted["objects"] == [] and deleted["can_undo"]
    back = c.post("/objects/undo").json()
    assert [o["id"] for o in back["objects"]] == [1]
    assert back["objects"][0]["version"] > first["version"], "an undone object gets a new version"
    assert back["can_redo"]
    again = c.post("/objects/redo").json()
    assert again["objects"] == []
    assert c.post("/objects/redo").status_code == 409
    c.post("/objects/undo")
    c.post("/objects/undo")  # before the accept
    assert c.get("/objects").json()["objects"] == []
    assert c.post("/objects/undo").status_code == 409


def test_a_restart_shows_the_layer_again(make_client):
    c, _ = make_client()
    pred = _click(c)
    c.post("/classes", json={"name": "tree", "color": "#00aa00"})
    _accept(c, pred, candidate=0, class_id=2)
    before = c.get("/objects").json()
    c2, _ = make_client()  # a second server on the same output folder
    after = c2.get("/objects").json()
    assert after["classes"] == before["classes"] and after["revision"] == before["revision"]
    assert after["objects"] == before["objects"]
    assert _accept(c2, _click(c2))["id"] == 2, "ids continue after a restart"


def test_downloads_geojson_in_lonlat_and_a_class_raster_on_the_scene_grid(make_client, web_env, tmp_path):
    c, app = make_client()
    pred = _click(c, multimask=False)
    c.post("/classes", json={"name": "roof", "color": "#ff0000"})
    _accept(c, pred, class_id=2)
    stored = app.state.terramask.store.get(pred["session_id"], pred["prediction_id"])[1]
    geo = c.get("/objects.geojson")
    assert geo.status_code == 200 and 'filename="blob-objects.geojson"' in geo.headers["content-disposition"]
    feature = json.loads(geo.content)["features"][0]
    lon, lat = np.array(shapely.geometry.shape(feature["geometry"]).centroid.coords[0])
    assert 14 < lon < 16 and 35 < lat < 37, "EPSG:4326 lon/lat near the scene (UTM 33N, 4000 km north)"
    assert feature["properties"]["class_name"] == "roof"
    labels_path = tmp_path / "labels.tif"
    labels_path.write_bytes(c.get("/labels.tif").content)
    with rasterio.open(labels_path) as ds, rasterio.open(web_env["scene"]) as scene:
        assert (ds.width, ds.height, ds.transform, ds.crs) == (scene.width, scene.height, scene.transform, scene.crs)
        labels = ds.read(1)
    np.testing.assert_array_equal(labels == 2, stored.candidates.masks[0])
    assert set(np.unique(labels)) <= {0, 2}
    gpkg = tmp_path / "objects.gpkg"
    gpkg.write_bytes(c.get("/objects.gpkg").content)
    assert pyogrio.raw.read(gpkg)[3][0].tolist() == [1]


def test_accept_errors_are_sentences(make_client):
    c, _ = make_client()
    pred = _click(c)
    unknown = c.post("/objects", json={"session_id": pred["session_id"], "prediction_id": "nope"})
    assert unknown.status_code == 404 and "predict again" in unknown.json()["detail"]
    no_class = c.post("/objects", json={"session_id": pred["session_id"], "class_id": 7})
    assert no_class.status_code == 404 and "class 7" in no_class.json()["detail"]
    bad = c.post("/objects", json={"session_id": pred["session_id"], "candidate": 5})
    assert bad.status_code == 400 and "candidate 5" in bad.json()["detail"]


def test_openapi_documents_the_layer_routes_and_their_status_codes(make_client):
    c, _ = make_client()
    paths = c.get("/openapi.json").json()["paths"]
    assert {"201", "404", "422"} <= set(paths["/objects"]["post"]["responses"])
    assert {"200", "404", "409"} <= set(paths["/objects/{object_id}"]["patch"]["responses"])
    assert {"200", "404", "409"} <= set(paths["/objects/{object_id}"]["delete"]["responses"])
    assert "409" in paths["/objects/undo"]["post"]["responses"]
    assert {"201", "409"} <= set(paths["/classes"]["post"]["responses"])
    for route in ("/objects.gpkg", "/objects.geojson", "/labels.tif"):
        assert "200" in paths[route]["get"]["responses"]
