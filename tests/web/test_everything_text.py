"""The page's text box over HTTP (issue 11): a text job with a tiny random-weight OWLv2
(the real ``transformers`` class through the real loader) and the tiny random SAM, on the
shown window and on the whole scene in tiles; candidates carry the phrase as their class,
accepting them with their proposed class uses (or creates) the layer's class of that
name; bad phrases and a server without a text model are short sentences (400), and
``GET /everything/text`` says whether the box works and which option turns it on."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from helpers.scenes import blob_scene, write_geotiff

pytest.importorskip("transformers")

PHRASES = ["building", "pond"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sam_checkpoint):
    from helpers.tiny_concept import write_owlv2
    from terramask.models.concept.resolve import load_text_model
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    root = tmp_path_factory.mktemp("text")
    scene = write_geotiff(root / "blob.tif", blob_scene(), nodata=0)  # 320 x 256 px, 0.5 m
    text = load_text_model(str(write_owlv2(root / "owlv2")), box_threshold=0.0)  # random weights: keep every box
    backend = load_backend(None, checkpoint=tiny_sam_checkpoint)
    apps = {"text": create_app(scene, backend, out_dir=root / "out", text_model=text),
            "plain": create_app(scene, backend, out_dir=root / "plain")}
    yield {name: TestClient(app) for name, app in apps.items()}
    for app in apps.values():
        app.state.terramask.close()


def _wait(c, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/everything/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def _run(c, **body) -> tuple[dict, list[dict]]:
    r = c.post("/everything", json={"scope": "text", **body})
    assert r.status_code == 202, r.text
    job = _wait(c, r.json()["job_id"])
    assert job["state"] == "done", job
    return job, c.get(f"/everything/{job['job_id']}/candidates").json()["candidates"]


@pytest.mark.slow
def test_a_text_job_on_the_window_gives_candidates_classed_by_phrase(served):
    c = served["text"]
    assert c.get("/everything/text").json() == {"available": True, "model": "owlv2-base", "reason": None}
    job, cands = _run(c, phrases=PHRASES, window={"col_off": 20, "row_off": 0, "width": 300, "height": 256})
    assert job["scope"] == "text" and job["folder"] is None and cands
    assert {x["class"] for x in cands} <= set(PHRASES) and all(x["class_id"] is None for x in cands)
    for x in cands:
        x0, y0, x1, y1 = x["bbox_px"]
        assert 20 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 256 and 0.0 <= x["score"] <= 1.0 and x["area_px"] > 0
    # accept with the proposed classes: 'building' and 'pond' are created once, each object gets its phrase's class
    before = {k["name"] for k in c.get("/objects").json()["classes"]}
    pick = [x["id"] for x in cands[:4]]
    r = c.post(f"/everything/{job['job_id']}/accept", json={"ids": pick, "proposed": True})
    assert r.status_code == 200, r.text
    layer = r.json()
    names = {k["id"]: k["name"] for k in layer["classes"]}
    wanted = {x["class"] for x in cands[:4]}
    assert set(names.values()) == before | wanted and len(names) == len(before) + len(wanted - before)
    got = {o["id"]: names[o["class_id"]] for o in layer["objects"] if o["id"] in r.json()["accepted"]}
    assert sorted(got.values()) == sorted(x["class"] for x in cands[:4])
    # a second job proposes the existing classes by id now
    _, again = _run(c, phrases=["Building"], window={"col_off": 20, "row_off": 0, "width": 300, "height": 256})
    building = next(k for k, v in names.items() if v == "building") if "building" in wanted else None
    assert {x["class"] for x in again} <= {"Building"}
    assert all(x["class_id"] == building for x in again)


@pytest.mark.slow
def test_a_text_job_on_the_whole_scene_runs_in_tiles(served):
    c = served["text"]
    job, cands = _run(c, phrases=["pond"], tile_size=128)
    assert (job["unit"], job["done"], job["total"]) == ("tiles", 9, 9), job
    assert cands and {x["class"] for x in cands} == {"pond"}
    assert all(0 <= x["bbox_px"][0] < x["bbox_px"][2] <= 320 for x in cands)


def test_bad_phrases_and_a_server_without_a_text_model_are_sentences(served):
    c = served["text"]
    for phrases, words in (([], "type what to find"), (["  "], "empty phrase"),
                           (["building. pond"], "without '.'"), (["a"] * 17, "at most 16")):
        r = c.post("/everything", json={"scope": "text", "phrases": phrases})
        assert r.status_code in (400, 422), r.text
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"] and len(r.json()["detail"]) < 300
    plain = served["plain"]
    status = plain.get("/everything/text").json()
    assert status["available"] is False and "--detector" in status["reason"]
    r = plain.post("/everything", json={"scope": "text", "phrases": ["building"]})
    assert r.status_code == 400 and "--detector" in r.json()["detail"]
