"""The error table: terramask errors -> HTTP status + one-line JSON, never a traceback."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from terramask.core import errors as E
from terramask.web.errors import STATUS_CODES, WEIGHTS_HINT, add_exception_handlers, status_for
from terramask.web.export import ExportExistsError
from terramask.web.store import PredictionGone


class ClickOnCloudError(E.PromptError):
    """A subclass the table does not list: it inherits PromptError's status."""


@pytest.mark.parametrize(
    "exc, status",
    [
        (E.PromptError("p"), 422),
        (E.BandError("b"), 422),
        (E.DatasetError("d"), 422),
        (E.InputError("i"), 400),
        (ClickOnCloudError("c"), 422),
        (E.SceneNotFoundError("s"), 404),
        (E.SceneError("s"), 500),
        (E.UnknownModelError("u"), 400),
        (E.WeightsNotFoundError("w"), 503),
        (E.MissingDependencyError("m"), 503),
        (E.ChecksumError("c"), 502),
        (E.CheckpointMismatchError("c"), 500),
        (E.OutputError("o"), 500),
        (ExportExistsError("x"), 409),
        (PredictionGone("g"), 404),
        (E.TerramaskError("t"), 500),
        (ValueError("v"), 500),
        (KeyError("k"), 500),
    ],
)
def test_status_follows_the_nearest_class_in_the_table(exc, status):
    assert status_for(exc) == status


def test_every_core_error_class_has_a_status():
    for cls in vars(E).values():
        if isinstance(cls, type) and issubclass(cls, E.TerramaskError):
            assert any(base in STATUS_CODES for base in cls.__mro__), cls


def _app_raising(exc: BaseException, **kwargs) -> TestClient:
    app = FastAPI()
    add_exception_handlers(app, **kwargs)

    @app.get("/boom")
    def boom():
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "exc, status, kind",
    [
        (E.PromptError("object point (400, 10) in scene pixels is outside scene.tif"), 422, "PromptError"),
        (E.BandError("scene.tif: band 7 does not exist"), 422, "BandError"),
        (E.SceneNotFoundError("scene.tif: no such file"), 404, "SceneNotFoundError"),
        (E.UnknownModelError("unknown model 'sam-vit-x'"), 400, "UnknownModelError"),
    ],
)
def test_handlers_return_one_line_json(exc, status, kind):
    response = _app_raising(exc).get("/boom")
    assert response.status_code == status
    assert response.json() == {"detail": str(exc), "type": kind}


def test_missing_weights_is_503_with_the_download_hint():
    response = _app_raising(E.WeightsNotFoundError("sam_vit_b_01ec64.pth is not in the cache")).get("/boom")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("sam_vit_b_01ec64.pth is not in the cache")
    assert WEIGHTS_HINT in detail
    # a message that already says how to get the weights is not repeated
    own = E.WeightsNotFoundError("missing; run: terramask models download sam-vit-h")
    assert _app_raising(own).get("/boom").json()["detail"] == str(own)


def test_unexpected_errors_are_500_with_one_line_and_no_traceback():
    response = _app_raising(RuntimeError("CUDA out of memory\n  File \"x.py\", line 3\nTraceback")).get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "RuntimeError"
    assert body["detail"].startswith("internal error (RuntimeError): CUDA out of memory")
    assert "\n" not in body["detail"]


def test_multi_line_terramask_messages_are_squeezed():
    response = _app_raising(E.SceneError("scene.tif: cannot read\n   TIFFReadDirectory failed")).get("/boom")
    assert response.status_code == 500
    assert response.json()["detail"] == "scene.tif: cannot read TIFFReadDirectory failed"


def test_callers_can_override_entries():
    response = _app_raising(E.OutputError("disk full"), status_codes={E.OutputError: 507}).get("/boom")
    assert response.status_code == 507


def test_unknown_route_is_json_404():
    client = _app_raising(E.InputError("x"))
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["type"] == "HTTPException"
