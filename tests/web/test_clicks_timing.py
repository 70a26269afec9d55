"""Where a click's time goes: ``Server-Timing`` on ``/predict`` (terramask.web.server_timing),
and the per-click ``PUT /session`` answers without re-rendering the candidates."""

from __future__ import annotations

import re
import time

import pytest

from terramask.web.server_timing import Laps

INSIDE = {"x": 140, "y": 100}


def _timing(header: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"([A-Za-z0-9_-]+);dur=([0-9.]+)", header)}


def test_laps_add_up_to_the_header_total():
    laps = Laps()
    time.sleep(0.01)
    assert laps.lap("first") >= 0.01
    laps.add("first", 0.005)
    laps.lap("second")
    laps.split("second", "inner", 1.0, "second")  # a part larger than its lap is capped
    timing = _timing(laps.header())
    assert list(timing) == ["first", "inner", "second", "total"]
    assert timing["first"] >= 15.0 and timing["second"] == 0.0
    assert timing["total"] >= timing["first"] - 5.0 + timing["inner"] - 0.2  # 5 ms of "first" were added
    with pytest.raises(ValueError, match="letters"):
        laps.add("no spaces", 1.0)


def test_a_click_says_where_its_time_went(client):
    """The header names each step of the click; the decoder lap is the backend's own
    decoder time the JSON reports, and the laps fit in the total."""
    response = client.post("/predict", json={"points": [INSIDE]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    timing = _timing(response.headers["server-timing"])
    for step in ("queue", "frame", "embedding", "decode", "predict", "render", "json", "total"):
        assert step in timing, f"{step} missing from {response.headers['server-timing']}"
    assert timing["decode"] == pytest.approx(1000 * response.json()["timings"]["decoder_s"], abs=0.2)
    assert sum(v for k, v in timing.items() if k != "total") <= timing["total"] + 0.5


def test_a_click_carries_the_pictures_and_no_scene_sized_arrays(client):
    """Every candidate's pictures are cropped to its box; nothing in the answer grows with
    the scene (no full-size masks, logits or polygons)."""
    body = client.post("/predict", json={"points": [INSIDE]}).json()
    for c in body["candidates"]:
        assert set(c) == {"index", "number", "title", "score", "area_px", "area_m2", "bbox_px", "png"}
        if c["png"] is not None:
            x0, y0, x1, y1 = c["bbox_px"]
            assert c["png"]["width"] <= x1 - x0 + 1 and c["png"]["height"] <= y1 - y0 + 1
            assert set(c["png"]) == {"data", "outline", "col_off", "row_off", "width", "height"}
    assert set(body) == {"session_id", "prediction_id", "model", "window", "refined", "note", "prompts",
                         "candidates", "timings"}


def test_setting_the_current_mask_answers_what_was_set_not_the_prediction(client):
    pred = client.post("/predict", json={"points": [INSIDE], "session_id": "timing-tab"}).json()
    put = client.put("/session", json={"session_id": "timing-tab", "prediction_id": "last", "candidate": 9})
    assert put.status_code == 200
    assert put.json() == {"session_id": "timing-tab", "current": {
        "prediction_id": pred["prediction_id"], "candidate": len(pred["candidates"]) - 1, "reopened": None}}
    got = client.get("/session", params={"session_id": "timing-tab"}).json()["current"]
    assert got["prediction"]["prediction_id"] == pred["prediction_id"] and got["prediction"]["candidates"][0]["png"]
    cleared = client.put("/session", json={"session_id": "timing-tab", "prediction_id": None})
    assert cleared.json() == {"session_id": "timing-tab", "current": None}


def test_a_page_click_carries_the_best_pictures_and_the_others_come_on_request(client):
    """``include: ["png_best"]`` (what the page sends): only the best candidate's pictures
    travel with the answer; ``GET /prediction/candidate`` gives any candidate's, the same
    as a full answer."""
    full = client.post("/predict", json={"points": [INSIDE], "session_id": "lazy-tab"}).json()
    best = client.post("/predict", json={"points": [INSIDE], "session_id": "lazy-tab", "include": ["png_best"]})
    body = best.json()
    assert "png" in body["candidates"][0] and all("png" not in c for c in body["candidates"][1:])
    assert body["candidates"][0]["png"] == full["candidates"][0]["png"]
    assert len(best.content) < len(client.post("/predict", json={"points": [INSIDE]}).content)
    for c in full["candidates"]:
        got = client.get("/prediction/candidate", params={"session_id": "lazy-tab", "prediction_id": body["prediction_id"],
                                                         "candidate": c["index"]})
        assert got.status_code == 200
        assert got.json() == {"prediction_id": body["prediction_id"], "index": c["index"], "png": c["png"]}
    missing = client.get("/prediction/candidate", params={"session_id": "lazy-tab", "candidate": 7})
    assert missing.status_code == 400 and "does not exist" in missing.json()["detail"]
    other_tab = client.get("/prediction/candidate", params={"session_id": "another-tab",
                                                           "prediction_id": body["prediction_id"]})
    assert other_tab.status_code == 404
