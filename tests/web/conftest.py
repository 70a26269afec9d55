"""Fixtures for the web app tests: one tiny-SAM app per module (its embedding is reused)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.scenes import blob_scene, write_geotiff


class RecordingBackend:
    """Wraps a backend; records every encoder run and every prompt set the app sends."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.encoded: list[tuple[int, ...]] = []
        self.calls: list[dict] = []

    def set_image(self, image):
        self.encoded.append(np.asarray(image).shape)
        return self.inner.set_image(image)

    def predict(self, embedding, prompts, multimask=True):
        self.calls.append({
            "points": prompts.points.copy(),
            "labels": prompts.labels.copy(),
            "boxes": prompts.boxes.copy(),
            "prior": None if prompts.mask_logits is None else prompts.mask_logits.copy(),
            "multimask": multimask,
        })
        return self.inner.predict(embedding, prompts, multimask=multimask)


@pytest.fixture(scope="module")
def web_env(tmp_path_factory):
    """A per-module cache dir (the autouse cache fixture is per test) and the blob scene:
    320x256 px, 3-band uint16, EPSG:32633 at 0.5 m, bright rectangle at rows 60-140 /
    cols 80-200, the left 20 columns nodata (0)."""
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TERRAMASK_CACHE", str(root / "cache"))
        mp.delenv("TERRAMASK_MODEL", raising=False)
        yield {"root": root, "scene": write_geotiff(root / "blob.tif", blob_scene(), nodata=0)}


@pytest.fixture(scope="module")
def tiny_backend(web_env, tiny_sam_checkpoint):
    """The tiny random SAM, loaded the way users load a checkpoint, behind a recorder."""
    from terramask.models.resolve import load_backend

    return RecordingBackend(load_backend(None, checkpoint=tiny_sam_checkpoint))


@pytest.fixture(scope="module")
def app(web_env, tiny_backend):
    from terramask.web.app import create_app

    application = create_app(web_env["scene"], tiny_backend, out_dir=web_env["root"] / "exports")
    yield application
    application.state.terramask.close()


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def first(client):
    """One object click on the bright rectangle (module-wide, so the embedding runs once),
    asking for polygons as well as the PNGs."""
    response = client.post("/predict", json={"points": [{"x": 140, "y": 100, "label": 1}],
                                             "include": ["png", "geojson"]})
    assert response.status_code == 200, response.text
    return response.json()
