"""The multi-scene server (``terramask serve DIR_OR_FILES...``): scene ids instead of
paths, views per scene/bands/model under ``/scenes/{id}/{bands}/{model}/``, one object
layer per scene shared by its views, the default view at the root, and two tabs (two
sessions) that do not see each other's current mask."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers.scenes import blob_scene, write_geotiff

INSIDE = {"x": 140, "y": 100}


@pytest.fixture(scope="module")
def scene_dirs(tmp_path_factory, web_env):
    root = tmp_path_factory.mktemp("scenes")
    first = root / "first"
    first.mkdir()
    write_geotiff(first / "blob.tif", blob_scene(), nodata=0)
    write_geotiff(first / "four.tif", np.concatenate([blob_scene(), blob_scene(seed=1)[:1]]))
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(first / "plain.png")
    (first / "notes.txt").write_text("not a scene")
    (first / ".hidden.tif").write_bytes(b"II*\x00")
    other = root / "other"
    other.mkdir()
    write_geotiff(other / "blob.tif", blob_scene(seed=3), nodata=0)
    return first, other / "blob.tif"


@pytest.fixture()
def server(scene_dirs, tiny_backend, tmp_path):
    from terramask.web.server import create_server

    made = []

    def make(**options):
        app = create_server(list(scene_dirs), tiny_backend, out_dir=tmp_path / "out", models=["classic"], **options)
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


def _ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def test_scenes_are_listed_by_id_and_the_root_is_the_first(server):
    c = server()
    listing = _ok(c.get("/scenes"))
    assert [s["id"] for s in listing["scenes"]] == ["blob", "four", "plain", "blob-2"]
    assert listing["models"] == ["sam-tiny_sam", "classic"]
    assert listing["default"] == {"scene": "blob", "model": "sam-tiny_sam", "bands": "default"}
    assert listing["max_upload_mb"] == 500
    assert _ok(c.get("/scene"))["name"] == "blob.tif"
    other = _ok(c.get("/scenes/blob-2/default/default/scene"))
    assert other["name"] == "blob.tif" and other["width"] == 320
    assert _ok(c.get("/scenes/plain/default/default/scene"))["width"] == 60
    page = c.get("/scenes/four/default/default/")
    assert page.status_code == 200 and "<canvas" in page.text
    slash = c.get("/scenes/four/default/default", follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"].endswith("/scenes/four/default/default/")


def test_bands_and_model_per_view(server):
    c = server()
    assert _ok(c.get("/scenes/four/default/default/scene"))["bands"] == [1, 2, 3]
    assert _ok(c.get("/scenes/four/4-3-2/default/scene"))["bands"] == [4, 3, 2]
    bad = c.get("/scenes/four/9-1-1/default/scene")
    assert bad.status_code == 422 and "9" in bad.json()["detail"]
    shape = c.get("/scenes/four/4,3/default/scene")
    assert shape.status_code == 422 and "4-3-2" in shape.json()["detail"]
    classic = _ok(c.post("/scenes/blob/default/classic/predict", json={"points": [INSIDE]}))
    assert classic["model"] == "classic"
    assert _ok(c.get("/scenes/blob/default/classic/healthz"))["model"] == "classic"
    unknown = c.get("/scenes/blob/default/sam-vit-h/scene")
    assert unknown.status_code == 404 and "sam-tiny_sam, classic" in unknown.json()["detail"]


@pytest.mark.parametrize("scene_id", ["notes", ".hidden", "first", "blob.tif", "blob-3"])
def test_unlisted_scene_ids_are_refused_with_a_sentence(server, scene_id):
    response = server().get(f"/scenes/{scene_id}/default/default/scene")
    assert response.status_code == 404, response.text
    assert "GET /scenes lists the scenes" in response.json()["detail"]


@pytest.mark.parametrize("path", [
    "/scenes/..%2F..%2Fetc%2Fpasswd/default/default/scene",
    "/scenes/%2E%2E/default/default/scene",
    "/scenes/notes/default/default/scene",
    "/scenes/.hidden/default/default/scene",
    "/scenes/first/default/default/scene",
    "/scenes/blob.tif/default/default/scene",
])
def test_requests_name_listed_scene_ids_never_paths(server, path):
    c = server()
    response = c.get(path)
    assert response.status_code == 404, response.text
    assert set(response.json()) == {"detail", "type"} and "root:" not in response.text


def test_each_scene_has_one_layer_shared_by_its_views(server, tmp_path):
    c = server()
    pred = _ok(c.post("/scenes/four/4-3-2/default/predict", json={"points": [INSIDE], "session_id": "tab"}))
    _ok(c.post("/scenes/four/4-3-2/default/objects",
               json={"session_id": "tab", "prediction_id": pred["prediction_id"]}), 201)
    assert len(_ok(c.get("/scenes/four/default/classic/objects"))["objects"]) == 1
    assert _ok(c.get("/objects"))["objects"] == [], "the first scene's layer is its own"
    assert _ok(c.get("/scenes/blob-2/default/default/objects"))["objects"] == []
    assert (tmp_path / "out" / "layers" / "four" / "objects.gpkg").is_file()


def test_least_recently_used_views_close_and_reopen(server):
    c = server(max_views=2)
    views = c.app.state.views
    for bands in ("1-2-3", "2-2-2", "3-2-1"):
        _ok(c.get(f"/scenes/four/{bands}/default/scene"))
    assert len(views._apps) == 2
    assert _ok(c.get("/scenes/four/1-2-3/default/scene"))["bands"] == [1, 2, 3]


def test_two_tabs_do_not_see_each_others_current_mask(server):
    a = b = server()  # one server; tabs differ by their session ids (the page keeps one per tab)
    pred = _ok(a.post("/predict", json={"points": [INSIDE], "session_id": "tabA"}))
    _ok(a.put("/session", json={"session_id": "tabA", "prediction_id": pred["prediction_id"], "candidate": 2}))
    mine = _ok(a.get("/session", params={"session_id": "tabA"}))["current"]
    assert mine["prediction"]["prediction_id"] == pred["prediction_id"] and mine["candidate"] == 2
    assert mine["prediction"]["prompts"]["points"] == [[140.0, 100.0]]
    assert _ok(b.get("/session", params={"session_id": "tabB"}))["current"] is None
    stolen = b.put("/session", json={"session_id": "tabB", "prediction_id": pred["prediction_id"]})
    assert stolen.status_code == 404
    assert b.post("/objects", json={"session_id": "tabB"}).status_code == 404, "tab B has no mask to accept"
    assert b.post("/predict", json={"points": [{"x": 150, "y": 90}], "session_id": "tabB",
                                    "refine_from": pred["prediction_id"]}).status_code == 404
    _ok(a.put("/session", json={"session_id": "tabA", "prediction_id": None}))
    assert _ok(a.get("/session", params={"session_id": "tabA"}))["current"] is None
    # per scene view: tab A's mask on the first scene is not its mask on another scene
    assert _ok(a.get("/scenes/blob-2/default/default/session", params={"session_id": "tabA"}))["current"] is None
