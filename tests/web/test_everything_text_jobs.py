"""Text jobs of segment everything with deterministic stand-ins (no transformers needed):
cancel stops a tiled text job between tiles and keeps no file; a detector stand-in's
boxes are masked by the view's model (the classic engine here); a window larger than the
limit is refused in one sentence."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from helpers.scenes import write_geotiff
from helpers.squares_scene import CENTRES, SCENE_H, SCENE_W, SIDE, squares_scene
from terramask.core.maskset import MaskSet
from terramask.models.base import as_rgb8
from terramask.models.concept.base import CLASS_COLUMN
from terramask.models.concept.detectors import Detections
from terramask.models.concept.resolve import TextModel


class SquareDetector:
    """Detector stand-in: every bright square's box, for each phrase (score 0.8)."""

    name = "square-detector"

    def detect(self, rgb, phrases):
        labels, n = ndimage.label(np.asarray(rgb).mean(axis=2) > 128)
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)]
        k = len(phrases)
        return Detections(np.array(boxes * k, dtype=np.float64).reshape(-1, 4), np.full(n * k, 0.8, np.float32),
                          np.repeat(np.arange(k), n))


class GatedConcept:
    """Concept stand-in whose ``find`` waits for ``gate`` (one release per tile) and finds nothing."""

    name = "gated"

    def __init__(self):
        self.gate = threading.Semaphore(0)
        self.calls = 0

    def find(self, image, query):
        assert self.gate.acquire(timeout=60), "the test never opened the gate"
        self.calls += 1
        rows, cols = as_rgb8(image).shape[:2]
        return MaskSet(np.zeros((0, rows, cols), bool), extras={CLASS_COLUMN: np.zeros(0, dtype=object),
                                                                "predicted_iou": np.zeros(0, np.float32)})


@pytest.fixture()
def make_client(tmp_path):
    from terramask.models.resolve import load_backend
    from terramask.web.app import create_app

    scene = write_geotiff(tmp_path / "squares.tif", squares_scene())
    apps = []

    def make(text_model):
        app = create_app(scene, load_backend("classic"), out_dir=tmp_path / "out", text_model=text_model)
        apps.append(app)
        return TestClient(app)

    yield make
    for app in apps:
        app.state.terramask.close()


def _wait(c, job_id, until=lambda j: j["state"] != "running", timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/everything/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job}")


def test_a_detector_stand_in_with_the_classic_engine_finds_the_squares_with_their_class(make_client):
    c = make_client(TextModel("square-detector", detector=SquareDetector()))
    window = {"col_off": 0, "row_off": 0, "width": SCENE_W, "height": SCENE_H}
    r = c.post("/everything", json={"scope": "text", "phrases": ["roof", "tree"], "window": window})
    assert r.status_code == 202, r.text
    assert _wait(c, r.json()["job_id"])["state"] == "done"
    cands = c.get(f"/everything/{r.json()['job_id']}/candidates").json()["candidates"]
    assert sorted(x["class"] for x in cands) == ["roof"] * 24 + ["tree"] * 24
    centres = [((x0 + x1) / 2, (y0 + y1) / 2) for x0, y0, x1, y1 in (x["bbox_px"] for x in cands)]
    assert all(min(abs(cx - x) + abs(cy - y) for x, y in CENTRES) <= 4 for cx, cy in centres)
    assert all(x["area_px"] <= (SIDE + 4) ** 2 for x in cands)


def test_cancel_stops_a_tiled_text_job_between_tiles_and_keeps_nothing(make_client, tmp_path):
    concept = GatedConcept()
    c = make_client(TextModel("gated", sam3=concept))
    r = c.post("/everything", json={"scope": "text", "phrases": ["roof"], "tile_size": 128})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["unit"] == "tiles" and job["folder"] is not None
    concept.gate.release()
    _wait(c, job["job_id"], lambda j: j["done"] >= 1)
    assert c.post(f"/everything/{job['job_id']}/cancel").status_code == 200
    concept.gate.release()  # the tile in progress finishes, then the job stops
    done = _wait(c, job["job_id"])
    assert done["state"] == "cancelled" and done["total"] == 9 and concept.calls <= 3
    assert not (tmp_path / "out" / "work").exists() or not any((tmp_path / "out" / "work").rglob("*.tif"))
    assert c.get(f"/everything/{job['job_id']}/candidates").status_code == 409


def test_a_too_large_window_is_refused_in_one_sentence(make_client):
    c = make_client(TextModel("square-detector", detector=SquareDetector()))
    r = c.post("/everything", json={"scope": "text", "phrases": ["roof"],
                                    "window": {"col_off": 0, "row_off": 0, "width": 4000, "height": 10}})
    assert r.status_code in (400, 422) and "\n" not in r.json()["detail"], r.text
