"""Re-opening an accepted object for refinement, and the FlatGeobuf download: the object
keeps its prompts (saved in the GeoPackage), re-open predicts them again in the caller's
session, more clicks refine, accepting replaces the object (same id, new version), undo
brings the earlier one back."""

from __future__ import annotations

import json

import pyogrio
import pyogrio.raw
import pytest
import shapely
from fastapi.testclient import TestClient

INSIDE = {"x": 140, "y": 100}


@pytest.fixture()
def make_client(web_env, tiny_backend, tmp_path):
    from terramask.web.app import create_app

    apps = []

    def make():
        app = create_app(web_env["scene"], tiny_backend, out_dir=tmp_path / "out")
        apps.append(app)
        return TestClient(app)

    yield make
    for app in apps:
        app.state.terramask.close()


def _ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def _accept(c, pred, candidate=0, **extra):
    return _ok(c.post("/objects", json={"session_id": pred["session_id"], "prediction_id": pred["prediction_id"],
                                        "candidate": candidate, **extra}), 201)


def test_an_object_keeps_its_prompts_across_a_restart(make_client, tmp_path):
    c = make_client()
    pred = _ok(c.post("/predict", json={"points": [INSIDE], "session_id": "tabA"}))
    refined = _ok(c.post("/predict", json={"points": [{"x": 100, "y": 70, "label": 0}], "session_id": "tabA",
                                           "refine_from": pred["prediction_id"], "refine_candidate": 2}))
    _accept(c, refined, candidate=1)
    meta, _, _, fields = pyogrio.raw.read(tmp_path / "out" / "layers" / "blob" / "objects.gpkg", layer="objects")
    stored = json.loads(dict(zip(meta["fields"], fields))["prompts"][0])
    assert stored["points"] == [[140.0, 100.0], [100.0, 70.0]] and stored["labels"] == [1, 0]
    assert stored["candidate"] == 1 and stored["multimask"] is True
    c2 = make_client()  # a restart reads the prompts back
    obj = _ok(c2.get("/objects"))["objects"][0]
    again = _ok(c2.post(f"/objects/{obj['id']}/reopen", json={"session_id": "tabB", "version": obj["version"]}))
    assert again["prompts"]["points"] == stored["points"] and again["prompts"]["labels"] == [1, 0]
    assert again["reopened"] == {"id": 1, "version": obj["version"], "class_id": 1, "candidate": 1}


def test_reopen_refine_accept_replaces_the_object_and_undo_restores_it(make_client, web_env):
    c = make_client()
    pred = _ok(c.post("/predict", json={"points": [INSIDE], "session_id": "tab"}))
    layer = _accept(c, pred)
    first = layer["objects"][0]
    opened = _ok(c.post("/objects/1/reopen", json={"session_id": "tab", "version": first["version"]}))
    assert opened["session_id"] == "tab" and opened["prompts"]["points"] == [[140.0, 100.0]]
    # the re-made mask is the accepted one (same prompts, same model)
    assert opened["candidates"][0]["area_px"] == first["area_px"]
    refined = _ok(c.post("/predict", json={"points": [{"x": 180, "y": 120, "label": 1}], "session_id": "tab",
                                           "refine_from": opened["prediction_id"]}))
    assert refined["refined"] and len(refined["prompts"]["points"]) == 2
    replaced = _accept(c, refined, candidate=0, object_id=1, version=first["version"])
    assert replaced["id"] == 1 and [o["id"] for o in replaced["objects"]] == [1], "same id, no new object"
    now = replaced["objects"][0]
    assert now["version"] > first["version"] and now["version"] == replaced["revision"]
    assert now["area_px"] == refined["candidates"][0]["area_px"]
    stale = c.post("/objects", json={"session_id": "tab", "prediction_id": refined["prediction_id"],
                                     "object_id": 1, "version": first["version"]})
    assert stale.status_code == 409 and "changed since" in stale.json()["detail"]
    back = _ok(c.post("/objects/undo"))
    assert [o["id"] for o in back["objects"]] == [1] and back["objects"][0]["area_px"] == first["area_px"]
    assert back["objects"][0]["outline_px"] == first["outline_px"]


def test_reopen_errors(make_client):
    c = make_client()
    pred = _ok(c.post("/predict", json={"points": [INSIDE], "session_id": "tab"}))
    obj = _accept(c, pred)["objects"][0]
    stale = c.post("/objects/1/reopen", json={"session_id": "tab", "version": obj["version"] + 5})
    assert stale.status_code == 409
    assert c.post("/objects/7/reopen", json={"session_id": "tab", "version": 0}).status_code == 404
    half = c.post("/objects", json={"session_id": "tab", "object_id": 1})
    assert half.status_code == 400 and "go together" in half.json()["detail"]


def test_an_object_without_prompts_reopens_from_its_bounding_box(make_client, tmp_path):
    c = make_client()
    pred = _ok(c.post("/predict", json={"points": [INSIDE], "session_id": "tab", "multimask": False}))
    _accept(c, pred)
    app_layer = c.app.state.terramask.layer
    from dataclasses import replace as dc_replace

    with app_layer.lock:  # as segment-everything or an older layer file leaves it
        app_layer.objects[1] = dc_replace(app_layer.objects[1], prompts=None)
    obj = _ok(c.get("/objects"))["objects"][0]
    opened = _ok(c.post("/objects/1/reopen", json={"session_id": "tab", "version": obj["version"]}))
    xs = [x for ring in obj["outline_px"] for x, _ in ring]
    ys = [y for ring in obj["outline_px"] for _, y in ring]
    assert opened["prompts"]["points"] == []
    # the outline is simplified by at most half a pixel
    assert opened["prompts"]["boxes"] == [[pytest.approx(min(xs), abs=0.6), pytest.approx(min(ys), abs=0.6),
                                           pytest.approx(max(xs), abs=0.6), pytest.approx(max(ys), abs=0.6)]]


def test_flatgeobuf_download_in_the_scene_crs(make_client, tmp_path):
    c = make_client()
    pred = _ok(c.post("/predict", json={"points": [INSIDE], "session_id": "tab", "multimask": False}))
    layer = _accept(c, pred)
    response = c.get("/objects.fgb")
    assert response.status_code == 200 and 'filename="blob-objects.fgb"' in response.headers["content-disposition"]
    path = tmp_path / "objects.fgb"
    path.write_bytes(response.content)
    assert pyogrio.read_info(path)["driver"] == "FlatGeobuf"
    meta, _, wkbs, fields = pyogrio.raw.read(path)
    assert "32633" in meta["crs"]
    columns = dict(zip(meta["fields"], fields))
    assert columns["id"].tolist() == [1] and columns["class_name"].tolist() == ["object"]
    assert shapely.from_wkb(wkbs[0]).area == pytest.approx(layer["objects"][0]["area_m2"])
