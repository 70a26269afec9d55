"""Segment everything over HTTP: window and tiled whole-scene jobs with the classic engine
and the tiny random SAM, progress that moves, cancel that stops between tiles / point
batches and leaves no files, candidates with areas and scores, bulk accept into the layer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyogrio.raw
import pytest
from fastapi.testclient import TestClient

from helpers.scenes import write_geotiff
from helpers.squares_scene import SCENE_H, SCENE_W, squares_scene

WHOLE = {"col_off": 0, "row_off": 0, "width": SCENE_W, "height": SCENE_H}


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("everything") / "squares.tif", squares_scene())


@pytest.fixture(scope="module")
def classic():
    from terramask.models.resolve import load_backend

    return load_backend("classic")


class Gated:
    """The classic backend whose ``generate`` waits for ``gate`` (one release per call)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.gate = threading.Semaphore(0)
        self.calls = 0

    def set_image(self, image):
        return self.inner.set_image(image)

    def predict(self, embedding, prompts, multimask=True):
        return self.inner.predict(embedding, prompts, multimask=multimask)

    def generate(self, image, **kwargs):
        assert self.gate.acquire(timeout=60), "the test never opened the gate"
        self.calls += 1
        return self.inner.generate(image, **kwargs)


@pytest.fixture()
def make_client(squares, tmp_path):
    from terramask.web.app import create_app

    apps = []

    def make(backend):
        app = create_app(squares, backend, out_dir=tmp_path / "out")
        apps.append(app)
        return TestClient(app)

    yield make
    for app in apps:
        app.state.terramask.close()


def _wait(c, job_id: str, until=lambda j: j["state"] != "running", timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/everything/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job} after {timeout} s")


def _start(c, **body) -> dict:
    r = c.post("/everything", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def test_a_window_job_gives_candidates_with_areas_and_scores(make_client, classic):
    c = make_client(classic)
    job = _start(c, window=WHOLE)
    assert job["state"] == "running" and job["scope"] == "window" and job["window"] == WHOLE
    done = _wait(c, job["job_id"])
    assert done["state"] == "done", done
    got = c.get(f"/everything/{job['job_id']}/candidates").json()
    cands = got["candidates"]
    assert len(cands) == done["candidates"] >= 20, "the squares (and ground pieces) are found"
    assert [x["id"] for x in cands] == list(range(1, len(cands) + 1))
    assert [x["score"] for x in cands] == sorted((x["score"] for x in cands), reverse=True)
    for x in cands:
        assert x["state"] == "open" and 0.0 <= x["score"] <= 1.0 and x["area_px"] > 0
        assert x["area_m2"] == pytest.approx(x["area_px"] * 0.25)  # 0.5 m pixels
        x0, y0, x1, y1 = x["bbox_px"]
        assert 0 <= x0 < x1 <= SCENE_W and 0 <= y0 < y1 <= SCENE_H
    # the first square (cols 15-44, rows 20-49) is a candidate of its own
    square = [x for x in cands if max(abs(a - b) for a, b in zip(x["bbox_px"], (15, 20, 45, 50))) <= 3]
    assert square and abs(square[0]["area_px"] - 900) <= 150


def test_a_scene_job_runs_tiled_and_its_progress_counts_tiles(make_client, classic, tmp_path):
    gated = Gated(classic)
    c = make_client(gated)
    job = _start(c, scope="scene", tile_size=192)
    first = _wait(c, job["job_id"], lambda j: j["total"] > 0)
    total = first["total"]
    assert (first["unit"], first["done"]) == ("tiles", 0) and total >= 4
    seen = []
    for k in range(total):
        gated.gate.release()
        seen.append(_wait(c, job["job_id"], lambda j, k=k: j["done"] > k or j["state"] != "running")["done"])
    assert seen == list(range(1, total + 1)), "progress moves one tile at a time"
    done = _wait(c, job["job_id"])
    assert done["state"] == "done" and done["candidates"] >= 20
    folder = tmp_path / "out" / "work" / "squares" / f"everything-{job['job_id']}"
    assert done["folder"] == str(folder)
    assert {p.name for p in folder.iterdir()} == {"labels.tif", "objects.gpkg", "masks.json", "overlay.png",
                                                  "summary.json"}
    meta, _, wkbs, _ = pyogrio.raw.read(folder / "objects.gpkg", layer="objects")
    assert len(wkbs) == done["candidates"]
    cands = c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]
    assert len(cands) == done["candidates"] and all(x["area_px"] > 0 for x in cands)


def test_cancel_stops_between_tiles_and_leaves_no_files(make_client, classic, tmp_path):
    gated = Gated(classic)
    c = make_client(gated)
    job = _start(c, scope="scene", tile_size=192)
    gated.gate.release()
    _wait(c, job["job_id"], lambda j: j["done"] >= 1)
    r = c.post(f"/everything/{job['job_id']}/cancel")
    assert r.status_code == 200
    for _ in range(8):
        gated.gate.release()
    done = _wait(c, job["job_id"])
    assert done["state"] == "cancelled" and done["candidates"] == 0
    # the tile already inside the model may finish; no later tile reaches it
    assert gated.calls <= 2 < done["total"], "tiles were segmented after the cancel"
    work = tmp_path / "out" / "work" / "squares"
    assert not any(work.rglob("*")), "nothing half-written remains"
    r = c.get(f"/everything/{job['job_id']}/candidates")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]


def test_a_sam_window_job_counts_points_and_cancel_stops_between_point_batches(squares, tiny_sam_checkpoint, tmp_path):
    from terramask.core.geometry import Window
    from terramask.io.scene import open_scene
    from terramask.models.resolve import load_backend
    from terramask.web.everything import EverythingJobs
    from terramask.web.everything_job import JobSpec

    sam = load_backend(None, checkpoint=tiny_sam_checkpoint)
    params = {"points_per_side": 4, "points_per_batch": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    decoded: list[int] = []
    started = threading.Event()

    class Recording:
        def __init__(self):
            self.name, self.img_size = sam.name, sam.img_size
            self.mask_threshold = getattr(sam, "mask_threshold", 0.0)

        def set_image(self, image):
            return sam.set_image(image)

        def decode_points(self, embedding, coords, labels):
            decoded.append(len(coords))
            if len(decoded) == 1 and cancel_after_first:
                assert started.wait(30)
                job.cancel()
            return sam.decode_points(embedding, coords, labels)

        def upscale_logits(self, *args, **kwargs):
            return sam.upscale_logits(*args, **kwargs)

    with open_scene(squares) as scene:
        jobs = EverythingJobs(scene, Recording(), threading.RLock(), tmp_path / "work")
        window = Window(0, 0, 128, 128)
        cancel_after_first = False
        job = jobs.start("s1", JobSpec("window", window, params))
        job.thread.join(120)
        assert job.state == "done", job.error
        assert (job.unit, job.total, job.done) == ("points", 16, 16) and decoded == [4, 4, 4, 4]
        assert all(c.area_px > 0 and c.geometry.area == pytest.approx(c.area_px * 0.25) for c in job.candidates)

        decoded.clear()
        cancel_after_first = True
        job = jobs.start("s1", JobSpec("window", window, params))
        started.set()
        job.thread.join(120)
        assert job.state == "cancelled" and decoded == [4], "the second batch never reached the model"
        jobs.close()


def test_accepting_candidates_in_bulk_writes_them_to_the_layer_as_one_undo_step(make_client, classic, tmp_path):
    c = make_client(classic)
    job = _start(c, window=WHOLE)
    _wait(c, job["job_id"])
    cands = c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]
    roof = c.post("/classes", json={"name": "roof", "color": "#ff8800"}).json()["id"]
    r = c.post(f"/everything/{job['job_id']}/accept", json={"ids": [1, 2, 3], "class_id": roof})
    assert r.status_code == 200, r.text
    layer = r.json()
    assert layer["accepted"] == [1, 2, 3] and layer["skipped"] == []
    assert [(o["class_id"], o["area_px"]) for o in layer["objects"]] == [(roof, x["area_px"]) for x in cands[:3]]
    meta, _, wkbs, fields = pyogrio.raw.read(tmp_path / "out" / "layers" / "squares" / "objects.gpkg", layer="objects")
    columns = dict(zip(meta["fields"], fields))
    assert "32633" in meta["crs"] and columns["class_name"].tolist() == ["roof"] * 3
    again = c.post(f"/everything/{job['job_id']}/accept", json={"ids": [3, 4]}).json()
    assert again["accepted"] == [4] and again["skipped"] == [3], "an accepted candidate is not accepted twice"
    discarded = c.post(f"/everything/{job['job_id']}/discard", json={"ids": [5, 6]}).json()
    assert discarded["discarded"] == [5, 6] and discarded["job"]["counts"] == {
        "open": len(cands) - 6, "accepted": 4, "discarded": 2}
    states = [x["state"] for x in c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"][:7]]
    assert states == ["accepted"] * 4 + ["discarded"] * 2 + ["open"]
    assert len(c.post("/objects/undo").json()["objects"]) == 3, "the second bulk accept is one undo step"
    assert len(c.post("/objects/undo").json()["objects"]) == 0, "the first one too"


def test_errors_are_sentences_with_documented_statuses(make_client, classic):
    gated = Gated(classic)
    c = make_client(gated)
    schema = c.get("/openapi.json").json()["paths"]

    def check(method, path, template, status, **kwargs):
        r = c.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        assert set(r.json()) == {"detail", "type"} and "\n" not in r.json()["detail"]
        assert str(status) in schema[template][method.lower()]["responses"], (template, status)
        return r.json()["detail"]

    assert "no segment-everything job" in check("GET", "/everything/nope", "/everything/{job_id}", 404)
    check("POST", "/everything/nope/cancel", "/everything/{job_id}/cancel", 404)
    check("POST", "/everything", "/everything", 400, json={"window": {**WHOLE, "width": 400}})
    check("POST", "/everything", "/everything", 400, json={"scope": "window"})
    check("POST", "/everything", "/everything", 422, json={"scope": "all"})
    job = _start(c, session_id="tab1", window=WHOLE)
    assert "still running" in check("POST", "/everything", "/everything", 409, json={"session_id": "tab1", "window": WHOLE})
    check("GET", f"/everything/{job['job_id']}/candidates", "/everything/{job_id}/candidates", 409)
    check("GET", f"/everything/{job['job_id']}/duplicates", "/everything/{job_id}/duplicates", 409)
    check("GET", "/everything/nope/duplicates", "/everything/{job_id}/duplicates", 404)
    check("POST", f"/everything/{job['job_id']}/accept", "/everything/{job_id}/accept", 409, json={"ids": [1]})
    gated.gate.release()
    assert _wait(c, job["job_id"])["state"] == "done"
    check("POST", f"/everything/{job['job_id']}/accept", "/everything/{job_id}/accept", 400, json={"ids": [9999]})
    check("POST", f"/everything/{job['job_id']}/accept", "/everything/{job_id}/accept", 404,
          json={"ids": [1], "class_id": 7})
    check("POST", f"/everything/{job['job_id']}/discard", "/everything/{job_id}/discard", 422, json={"ids": []})


def test_find_similar_to_an_object_of_the_layer_gives_its_kind_as_candidates(tmp_path):
    """Issue 11's find-similar from the page: one red object of the layer finds the other
    red objects of the scene (and no blue one) as candidates."""
    import shapely

    from helpers.feature_backends import BLUE, GREY, RED, ColourFeatureBackend
    from helpers.scenes import UTM33_TRANSFORM
    from terramask.web.app import create_app

    red = [(24, 24, 72, 64), (150, 40, 198, 80), (60, 180, 108, 220)]
    blue = [(150, 150, 198, 190)]
    img = np.empty((3, 256, 256), dtype=np.uint8)
    img[:] = np.array(GREY, np.uint8)[:, None, None]
    for boxes, colour in ((red, RED), (blue, BLUE)):
        for x0, y0, x1, y1 in boxes:
            img[:, y0:y1, x0:x1] = np.array(colour, np.uint8)[:, None, None]
    img = np.clip(img.astype(int) + np.random.default_rng(0).integers(-5, 6, img.shape), 1, 255).astype(np.uint8)
    scene = write_geotiff(tmp_path / "colours.tif", img)
    app = create_app(scene, ColourFeatureBackend(), out_dir=tmp_path / "out")
    try:
        c = TestClient(app)
        (x0, y0), (x1, y1) = UTM33_TRANSFORM @ red[0][:2], UTM33_TRANSFORM @ red[0][2:]
        app.state.terramask.layer.add(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), 1, 0.9,
                                      48 * 40, None)
        assert c.post("/everything", json={"scope": "similar", "object_ids": [7]}).status_code == 404
        assert c.post("/everything", json={"scope": "similar"}).status_code == 400
        job = _start(c, scope="similar", object_ids=[1], tile_size=256)
        done = _wait(c, job["job_id"])
        assert done["state"] == "done" and (done["unit"], done["done"], done["total"]) == ("tiles", 1, 1), done
        cands = c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]
        boxes = [x["bbox_px"] for x in cands]
        assert {(x["class"], x["class_id"]) for x in cands} == {("object", 1)}, "the example's class is proposed"

        def found(box):
            return any(max(abs(a - b) for a, b in zip(got, box)) <= 2 for got in boxes)

        assert found(red[1]) and found(red[2]), boxes
        assert not found(blue[0]), "a blue object is not like the red example"
        again = [x for x in cands if max(abs(a - b) for a, b in zip(x["bbox_px"], red[0])) <= 2]
        assert again and all(x["duplicate_of"] == 1 for x in again), "the example itself is found: a duplicate"
        assert all(x["duplicate_of"] is None for x in cands if x not in again)
    finally:
        app.state.terramask.close()


def test_a_reloaded_tab_gets_its_running_then_its_unreviewed_job_back_and_no_other_tab_does(make_client, classic):
    gated = Gated(classic)
    c = make_client(gated)

    def latest(session):
        r = c.get("/everything", params={"session_id": session})
        assert r.status_code == 200, r.text
        return r.json()["job"]

    assert latest("tab1") is None, "a tab that never started a job has none"
    job = _start(c, session_id="tab1", window=WHOLE)
    running = latest("tab1")
    assert (running["job_id"], running["state"]) == (job["job_id"], "running")
    assert latest("tab2") is None, "another tab does not see it"
    gated.gate.release()
    done = _wait(c, job["job_id"])
    assert latest("tab1")["job_id"] == job["job_id"] and latest("tab1")["state"] == "done"
    ids = list(range(1, done["candidates"] + 1))
    c.post(f"/everything/{job['job_id']}/accept", json={"ids": ids[:2]})
    assert latest("tab1")["counts"]["accepted"] == 2, "half reviewed: still shown"
    c.post(f"/everything/{job['job_id']}/discard", json={"ids": ids})
    assert latest("tab1") is None, "every candidate decided: nothing to come back to"

    cancelled = _start(c, session_id="tab1", window=WHOLE)
    c.post(f"/everything/{cancelled['job_id']}/cancel")
    gated.gate.release()
    assert _wait(c, cancelled["job_id"])["state"] == "cancelled"
    assert latest("tab1") is None, "a cancelled job is not brought back"
    assert c.get("/everything", params={"session_id": "../x"}).status_code == 422
    assert c.get("/everything").status_code == 422


def test_candidates_that_duplicate_layer_objects_are_marked_and_bulk_accept_leaves_them(squares, classic, tmp_path):
    import shapely
    import shapely.affinity

    from terramask.web.app import create_app

    app = create_app(squares, classic, out_dir=tmp_path / "out")
    try:
        c = TestClient(app)
        job = _start(c, window=WHOLE)
        _wait(c, job["job_id"])
        cands = c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]
        assert all(x["duplicate_of"] is None for x in cands), "an empty layer has nothing to duplicate"
        squares_found = [x for x in cands if abs(x["area_px"] - 900) <= 150][:3]
        assert len(squares_found) == 3
        geometry = {cand.id: cand.geometry for cand in app.state.terramask.everything.get(job["job_id"]).candidates}
        same, part, whole = (geometry[x["id"]] for x in squares_found)
        layer = app.state.terramask.layer
        layer.add(shapely.affinity.translate(same, 1.5, 1.0), 1, 0.9, 900, 225.0)  # the same square, 3 px off
        layer.add(part.envelope.buffer(6.0), 1, 0.9, 2800, 700.0)  # holds the second square, IoU ~0.3
        layer.add(whole.centroid.buffer(2.0, cap_style="square"), 1, 0.9, 64, 16.0)  # small, inside the third
        marks = {x["id"]: x["duplicate_of"] for x in c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]}
        first, second, third = (x["id"] for x in squares_found)
        assert marks[first] == 1 and marks[second] == 2, marks
        assert marks[third] is None, "a candidate holding a smaller object is a new object"
        duplicates = sorted(k for k, v in marks.items() if v is not None)
        ids_only = c.get(f"/everything/{job['job_id']}/duplicates").json()
        assert ids_only == {"duplicate_of": {str(k): marks[k] for k in duplicates}, "revision": layer.revision}

        r = c.post(f"/everything/{job['job_id']}/accept", json={"ids": [x["id"] for x in cands]})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["duplicates"] == duplicates and got["skipped"] == []
        assert len(got["accepted"]) == len(cands) - len(duplicates) and len(got["objects"]) == 3 + len(got["accepted"])
        assert {int(k) for k in got["duplicate_of"]} == set(duplicates), "they stay open, still marked"
        assert got["job"]["counts"]["open"] == len(duplicates)
        one = c.post(f"/everything/{job['job_id']}/accept", json={"ids": [first], "duplicates": True}).json()
        assert len(one["accepted"]) == 1 and one["duplicates"] == [], "picked by hand, a duplicate is accepted"
    finally:
        app.state.terramask.close()
