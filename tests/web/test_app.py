"""The web API on a real GeoTIFF with the tiny random SAM: every endpoint, frames,
embedding reuse, refinement across calls, export, and the errors users cause."""

from __future__ import annotations

import base64
import json
import threading

import cv2
import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import shape

from terramask.io.crs import transform_xy
from terramask.io.scene import open_scene


def _png(data: bytes) -> np.ndarray:
    """PNG bytes -> RGB(A) array."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    if img.ndim == 2:
        return img
    code = cv2.COLOR_BGRA2RGBA if img.ndim == 3 and img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def _data_uri_png(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return _png(base64.b64decode(uri[len(prefix):]))


def _stored(app, session_id, prediction_id):
    return app.state.terramask.store.get(session_id, prediction_id)[1]


# -- scene -------------------------------------------------------------------------------
def test_healthz_names_model_and_scene(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["model"] == "sam:tiny_sam"
    assert body["scene"] == "blob.tif"


def test_scene_describes_size_crs_bounds_bands_and_lonlat_grid(client, web_env):
    info = client.get("/scene").json()
    with rasterio.open(web_env["scene"]) as ds:
        bounds = list(ds.bounds)
        transform = list(ds.transform)[:6]
    assert (info["width"], info["height"], info["count"]) == (320, 256, 3)
    assert info["crs"] == "EPSG:32633" and info["crs_units"] == "metre"
    assert info["dtype"] == "uint16" and info["nodata"] == 0
    assert info["bounds"] == pytest.approx(bounds)
    assert info["transform"] == pytest.approx(transform)
    assert info["pixel_size"] == [0.5, 0.5]
    assert info["bands"] == [1, 2, 3]
    west, south, east, north = info["bounds_lonlat"]
    corners = transform_xy(np.array([[bounds[0], bounds[1]], [bounds[2], bounds[3]]]), "EPSG:32633", "EPSG:4326")
    assert (west, south) == pytest.approx(tuple(corners[0]), abs=1e-7)
    assert (east, north) == pytest.approx(tuple(corners[1]), abs=1e-7)
    grid = info["lonlat_grid"]
    # grid node (x=320, y=0) is the upper-right corner of the scene
    x_idx, y_idx = grid["xs"].index(320.0), grid["ys"].index(0.0)
    upper_right = transform_xy(np.array([[bounds[2], bounds[3]]]), "EPSG:32633", "EPSG:4326")[0]
    assert grid["lon"][y_idx][x_idx] == pytest.approx(upper_right[0], abs=1e-9)
    assert grid["lat"][y_idx][x_idx] == pytest.approx(upper_right[1], abs=1e-9)
    assert info["model"] == "sam:tiny_sam"
    assert info["encoding"] == {"full_scene_max": 2048, "window_size": 1024}


def test_full_size_preview_is_the_stretched_scene_with_nodata_transparent(client, web_env):
    response = client.get("/scene/image.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    rgba = _png(response.content)
    with open_scene(web_env["scene"]) as scene:
        expected = scene.read_rgb8()
    assert rgba.shape == (256, 320, 4)
    np.testing.assert_array_equal(rgba[:, :, :3], expected)
    assert (rgba[:, :20, 3] == 0).all() and (rgba[:, 20:, 3] == 255).all()


def test_preview_of_a_smaller_size_is_downsampled_never_upsampled(client):
    small = _png(client.get("/scene/image.png", params={"max_size": 160}).content)
    assert small.shape == (128, 160, 4)
    assert (small[:, :9, 3] == 0).all(), "nodata columns stay transparent in the quicklook"
    rect = small[35:65, 45:95, :3].mean()
    ground = small[90:120, 110:150, :3].mean()
    assert rect > ground + 100, "the bright rectangle is visible in the quicklook"
    big = _png(client.get("/scene/image.png", params={"max_size": 4096}).content)
    assert big.shape == (256, 320, 4)


def test_preview_size_out_of_range_is_a_validation_error(client):
    response = client.get("/scene/image.png", params={"max_size": 4})
    assert response.status_code == 422
    assert "max_size" in response.json()["detail"]


def test_window_png_is_native_resolution(client, web_env):
    response = client.get("/scene/window.png", params={"col_off": 100, "row_off": 50, "width": 64, "height": 32})
    assert response.status_code == 200
    rgba = _png(response.content)
    from terramask.core.geometry import Window

    with open_scene(web_env["scene"]) as scene:
        expected = scene.read_rgb8(Window(100, 50, 64, 32))
    assert rgba.shape == (32, 64, 4)
    np.testing.assert_array_equal(rgba[:, :, :3], expected)


def test_map_tiles_do_not_wait_for_the_model(app, client):
    state = app.state.terramask
    assert state.display is not state.scene, "display reads use their own file handle"
    result = {}
    with state.lock:  # as while the encoder runs
        reader = threading.Thread(target=lambda: result.update(
            response=client.get("/scene/window.png", params={"col_off": 0, "row_off": 0, "width": 32, "height": 32})))
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "a map tile waited for the model lock"
    assert result["response"].status_code == 200


@pytest.mark.parametrize(
    "params, words",
    [
        ({"col_off": 300, "row_off": 0, "width": 64, "height": 64}, "not inside the scene"),
        ({"col_off": 0, "row_off": 0, "width": 5000, "height": 64}, "too large"),
    ],
)
def test_bad_windows_are_400_with_the_reason(client, params, words):
    response = client.get("/scene/window.png", params=params)
    assert response.status_code == 400
    body = response.json()
    assert words in body["detail"] and body["type"] == "InputError"


# -- predict -----------------------------------------------------------------------------
def test_predict_returns_candidates_sorted_with_scores_areas_polygons_and_pngs(first, app):
    assert first["model"] == "sam:tiny_sam"
    assert first["window"] == {"col_off": 0, "row_off": 0, "width": 320, "height": 256}
    assert first["prompts"] == {"points": [[140.0, 100.0]], "labels": [1], "boxes": [], "prior_mask": False}
    cands = first["candidates"]
    assert len(cands) == 3
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True)
    stored = _stored(app, first["session_id"], first["prediction_id"])
    for i, c in enumerate(cands):
        mask = stored.candidates.masks[i]
        assert c["index"] == i
        assert c["title"] == f"Mask {i + 1}, Score: {c['score']:.3f}"
        assert c["area_px"] == int(mask.sum())
        assert c["area_m2"] == pytest.approx(c["area_px"] * 0.25)
        # the PNG is the mask cropped to its bounding box (opaque = mask), placed in scene pixels
        png = c["png"]
        rgba = _data_uri_png(png["data"])
        alpha = rgba[..., 3] == 255
        assert set(np.unique(rgba[..., 3])) <= {0, 255}
        assert alpha.shape == (png["height"], png["width"])
        placed = np.zeros_like(mask)
        placed[png["row_off"]:png["row_off"] + png["height"], png["col_off"]:png["col_off"] + png["width"]] = alpha
        np.testing.assert_array_equal(placed, mask)
        # the polygon covers exactly the mask's pixels, in the scene CRS and in lon/lat
        polygon = shape(c["geojson"]["geometry"])
        assert polygon.area == pytest.approx(c["area_m2"])
        lonlat = shape(c["geojson_lonlat"]["geometry"])
        back = shapely.transform(lonlat, lambda xy: transform_xy(xy, "EPSG:4326", "EPSG:32633"))
        assert back.symmetric_difference(polygon).area < 1e-3 * polygon.area
        assert c["geojson"]["properties"]["candidate"] == i + 1
        x0, y0, x1, y1 = c["bbox_px"]
        rows, cols = np.nonzero(mask)
        assert (x0, y0) == (cols.min(), rows.min())


def test_pixel_lonlat_and_map_prompts_agree_and_reuse_one_embedding(client, first, tiny_backend, web_env):
    encoded_before = len(tiny_backend.encoded)
    with rasterio.open(web_env["scene"]) as ds:
        world = np.array([ds.transform @ (140, 100)])
    lonlat = transform_xy(world, "EPSG:32633", "EPSG:4326")[0]
    png = ["png"]
    by_map = client.post(
        "/predict", json={"points": [{"x": world[0, 0], "y": world[0, 1]}], "frame": "map", "include": png}
    ).json()
    by_epsg = client.post(
        "/predict", json={"points": [{"x": world[0, 0], "y": world[0, 1]}], "frame": "EPSG:32633", "include": png}
    ).json()
    by_lonlat = client.post(
        "/predict", json={"points": [{"x": lonlat[0], "y": lonlat[1]}], "frame": "lonlat", "include": png}
    ).json()
    assert len(tiny_backend.encoded) == encoded_before, "clicks must reuse the scene's embedding"
    for other in (by_map, by_epsg, by_lonlat):
        assert other["prompts"]["points"][0] == pytest.approx([140.0, 100.0], abs=1e-6)
        assert [c["area_px"] for c in other["candidates"]] == [c["area_px"] for c in first["candidates"]]
        assert [c["score"] for c in other["candidates"]] == pytest.approx([c["score"] for c in first["candidates"]])


def test_refinement_across_two_calls_keeps_earlier_points_and_sends_the_prior(client, first, app, tiny_backend):
    chosen = 1  # the user picked "Mask 2" before refining
    previous = _stored(app, first["session_id"], first["prediction_id"])
    expected_prior = previous.candidates["low_res_logits"][chosen]
    calls_before = len(tiny_backend.calls)
    response = client.post("/predict", json={
        "points": [{"x": 30, "y": 30, "label": 0}],
        "session_id": first["session_id"],
        "refine_from": first["prediction_id"],
        "refine_candidate": chosen,
        "include": ["png"],
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == first["session_id"]
    assert body["prediction_id"] != first["prediction_id"]
    assert body["prompts"]["points"] == [[140.0, 100.0], [30.0, 30.0]]
    assert body["prompts"]["labels"] == [1, 0]
    assert body["prompts"]["prior_mask"] is True
    sent = tiny_backend.calls[calls_before:]
    assert len(sent) == 1
    np.testing.assert_array_equal(sent[0]["points"], [[140, 100], [30, 30]])
    np.testing.assert_array_equal(sent[0]["labels"], [1, 0])
    np.testing.assert_array_equal(sent[0]["prior"][0], expected_prior)


def test_refine_from_last_and_from_an_older_prediction_for_undo(client):
    a = client.post("/predict", json={"points": [{"x": 150, "y": 90}], "multimask": False, "include": []}).json()
    sid = a["session_id"]
    b = client.post("/predict", json={"points": [{"x": 60, "y": 200, "label": 0}], "session_id": sid,
                                      "refine_from": "last", "multimask": False, "include": []}).json()
    assert b["prompts"]["points"] == [[150.0, 90.0], [60.0, 200.0]]
    # undo b in the browser, then click again: refine from a, not from b
    c = client.post("/predict", json={"points": [{"x": 250, "y": 30, "label": 0}], "session_id": sid,
                                      "refine_from": a["prediction_id"], "multimask": False,
                                      "include": []}).json()
    assert c["prompts"]["points"] == [[150.0, 90.0], [250.0, 30.0]]
    assert len(c["candidates"]) == 1
    assert set(c["candidates"][0]) == {"index", "number", "title", "score", "area_px", "area_m2", "bbox_px"}


def test_refinement_errors(client, first):
    sid = first["session_id"]
    unknown = client.post("/predict", json={"points": [{"x": 50, "y": 50}], "session_id": sid, "refine_from": "nope"})
    assert unknown.status_code == 404
    assert "predict again" in unknown.json()["detail"]
    other_session = client.post("/predict", json={"points": [{"x": 50, "y": 50}], "session_id": "someone-else",
                                                  "refine_from": first["prediction_id"]})
    assert other_session.status_code == 404, "a session cannot refine another session's prediction"
    with_box = client.post("/predict", json={"boxes": [[10, 10, 50, 50]], "points": [{"x": 50, "y": 50}],
                                             "session_id": sid, "refine_from": "last"})
    assert with_box.status_code == 422 and "points only" in with_box.json()["detail"]
    bad_candidate = client.post("/predict", json={"points": [{"x": 50, "y": 50}], "session_id": sid,
                                                  "refine_from": first["prediction_id"], "refine_candidate": 7})
    assert bad_candidate.status_code == 400 and "candidate 7" in bad_candidate.json()["detail"]


def test_box_prompt_with_one_candidate_and_png_only(client):
    response = client.post("/predict", json={"boxes": [[80, 60, 200, 140]], "multimask": False, "include": ["png"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompts"]["boxes"] == [[80.0, 60.0, 200.0, 140.0]]
    assert len(body["candidates"]) == 1
    cand = body["candidates"][0]
    assert "geojson" not in cand and (cand["png"] is None) == (cand["area_px"] == 0)


@pytest.mark.parametrize(
    "payload, status, words",
    [
        ({"points": [{"x": 3000, "y": 30}]}, 422, "outside"),
        ({"points": [{"x": 5, "y": 30, "label": 0}]}, 422, "nodata"),
        ({"points": [{"x": 100, "y": 30, "label": 2}]}, 422, "label"),
        ({"points": [{"x": 100}]}, 422, "points.0.y"),
        ({"boxes": [[50, 50, 40, 60]]}, 422, "degenerate"),
        ({"boxes": [[50, 50, 40]]}, 422, "boxes.0"),
        ({"points": [{"x": 15.0, "y": 36.1}], "frame": "lonlat"}, 422, "outside"),
        ({"points": [{"x": 10, "y": 30}], "frame": "EPSG:999999"}, 400, "unknown CRS"),
        ({}, 422, "at least one point or box"),
        ({"points": [{"x": 100, "y": 30}], "session_id": "../etc"}, 422, "session_id"),
    ],
)
def test_bad_prompts_give_a_one_line_message(client, payload, status, words):
    response = client.post("/predict", json=payload)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail
    assert "\n" not in detail and "Traceback" not in detail


def test_candidate_polygon_download_in_lonlat_and_scene_crs(client, first):
    params = {"session_id": first["session_id"], "prediction_id": first["prediction_id"], "candidate": 1}
    response = client.get("/prediction.geojson", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    assert 'filename="blob-mask2.geojson"' in response.headers["content-disposition"]
    collection = response.json()
    assert collection["type"] == "FeatureCollection" and "crs" not in collection
    assert collection["features"][0] == first["candidates"][1]["geojson_lonlat"] | {
        "properties": {**first["candidates"][1]["geojson_lonlat"]["properties"], "candidate": 2}
    }
    in_map = client.get("/prediction.geojson", params=params | {"frame": "map"}).json()
    assert in_map["crs"] == "EPSG:32633"
    assert shape(in_map["features"][0]["geometry"]).area == pytest.approx(first["candidates"][1]["area_m2"])
    assert client.get("/prediction.geojson", params=params | {"candidate": 5}).status_code == 400
    assert client.get("/prediction.geojson", params=params | {"session_id": "other"}).status_code == 404
    assert client.get("/prediction.geojson", params=params | {"frame": "utm"}).status_code == 422


def test_predict_needs_json(client):
    response = client.post("/predict", content="points=1", headers={"Content-Type": "text/plain"})
    assert response.status_code == 422


# -- export ------------------------------------------------------------------------------
def test_export_writes_the_chosen_candidate_like_predict(client, first, app, web_env):
    sid, pid = first["session_id"], first["prediction_id"]
    response = client.post("/export", json={"session_id": sid, "prediction_id": pid, "candidate": 2, "name": "roof"})
    assert response.status_code == 200, response.text
    body = response.json()
    folder = web_env["root"] / "exports" / "roof"
    assert body["folder"] == str(folder) and body["candidate"] == 2
    assert set(body["files"]) == {"mask.tif", "mask.gpkg", "mask.geojson", "overlay.png", "logits.npy", "result.json"}
    for path in body["files"].values():
        assert (folder / path.rsplit("/", 1)[-1]).is_file()
    stored = _stored(app, sid, pid)
    with rasterio.open(folder / "mask.tif") as ds:
        assert ds.crs.to_epsg() == 32633
        written = ds.read(1)
    nodata = np.zeros((256, 320), dtype=bool)
    nodata[:, :20] = True
    np.testing.assert_array_equal(written == 1, stored.candidates.masks[2] & ~nodata)
    assert (written[nodata] == 255).all()
    result = json.loads((folder / "result.json").read_text())
    assert result["candidates"][0]["score"] == pytest.approx(first["candidates"][2]["score"])
    np.testing.assert_array_equal(np.load(folder / "logits.npy")[0], stored.candidates["low_res_logits"][2])
    assert body["score"] == pytest.approx(first["candidates"][2]["score"])

    again = client.post("/export", json={"session_id": sid, "prediction_id": pid, "name": "roof"})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    overwrite = client.post("/export", json={"session_id": sid, "prediction_id": pid, "name": "roof", "overwrite": True})
    assert overwrite.status_code == 200


def test_exported_mask_3_is_called_mask_3_in_every_file(client, first, web_env):
    """Bug 3: exporting Mask 3 wrote ``candidate: 1`` / "Mask 1" while the page and the
    GeoJSON download call it Mask 3."""
    import pyogrio.raw

    sid, pid = first["session_id"], first["prediction_id"]
    body = client.post("/export", json={"session_id": sid, "prediction_id": pid, "candidate": 2,
                                        "name": "third"}).json()
    assert body["number"] == 3 and body["title"] == first["candidates"][2]["title"]
    folder = web_env["root"] / "exports" / "third"
    assert json.loads((folder / "result.json").read_text())["candidates"][0]["candidate"] == 3
    assert json.loads((folder / "mask.geojson").read_text())["features"][0]["properties"]["candidate"] == 3
    _, _, _, fields = pyogrio.raw.read(folder / "mask.gpkg", columns=["candidate"])
    assert fields[0].tolist() == [3]
    download = client.get("/prediction.geojson", params={"session_id": sid, "prediction_id": pid, "candidate": 2})
    assert download.json()["features"][0]["properties"]["candidate"] == 3


def test_export_default_names_do_not_collide(client, first, web_env):
    sid, pid = first["session_id"], first["prediction_id"]
    names = [client.post("/export", json={"session_id": sid, "prediction_id": pid}).json()["name"] for _ in range(2)]
    assert names == ["blob-object", "blob-object-2"]


@pytest.mark.parametrize(
    "payload, status, words",
    [
        ({"name": "../outside"}, 422, "plain folder name"),
        ({"name": "/tmp/x"}, 422, "plain folder name"),
        ({"name": "x\n"}, 422, "plain folder name"),
        ({"candidate": 9}, 400, "candidate 9"),
        ({"prediction_id": "gone"}, 404, "no prediction"),
    ],
)
def test_export_errors(client, first, payload, status, words, web_env):
    body = {"session_id": first["session_id"], "prediction_id": first["prediction_id"], **payload}
    response = client.post("/export", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert not (web_env["root"] / "outside").exists()


# -- large scenes: windowed encoding -------------------------------------------------------
def test_large_scene_encodes_a_window_around_the_clicks(web_env, tiny_backend):
    """With a small full_scene_max the blob scene counts as 'large': the model sees a
    native-resolution window around the click, and masks come back placed in scene pixels."""
    from fastapi.testclient import TestClient

    from terramask.web.app import create_app

    app = create_app(web_env["scene"], tiny_backend, window_size=128, full_scene_max=200,
                     out_dir=web_env["root"] / "exports-large")
    with TestClient(app) as client:
        assert client.get("/scene").json()["encoding"] == {"full_scene_max": 200, "window_size": 128}
        first = client.post("/predict", json={"points": [{"x": 140, "y": 100}]}).json()
        window = first["window"]
        assert (window["width"], window["height"]) == (128, 128)
        assert window["col_off"] <= 140 < window["col_off"] + 128 and window["row_off"] <= 100 < window["row_off"] + 128
        assert tiny_backend.encoded[-1] == (128, 128, 3)
        for c in first["candidates"]:
            if c["png"] is not None:
                assert c["png"]["col_off"] >= window["col_off"]
                assert c["png"]["col_off"] + c["png"]["width"] <= window["col_off"] + 128
        outside = client.post("/predict", json={"points": [{"x": 310, "y": 250, "label": 0}],
                                                "session_id": first["session_id"], "refine_from": "last"})
        assert outside.status_code == 422 and "encoded window" in outside.json()["detail"]
        exported = client.post("/export", json={"session_id": first["session_id"]}).json()
        with rasterio.open(exported["files"]["mask.tif"]) as ds:
            assert (ds.width, ds.height) == (320, 256), "exports are on the scene grid"
