"""``terramask serve --detector``: the text model is loaded at start-up (a tiny random-weight
OWLv2 folder through the real loader) and the page's text box reports it; without one the
box is off and says which option turns it on; a folder that is no detector, or a
threshold without a text model, fails at start-up with one line."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("transformers")


@pytest.fixture()
def uvicorn_calls(monkeypatch):
    """Replace uvicorn.run: record the app instead of serving forever."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append(app))
    return calls


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_with_a_detector_folder_turns_the_text_box_on(run_cli, blob_tif, tiny_sam_checkpoint, uvicorn_calls,
                                                             tmp_path):
    from helpers.tiny_concept import write_owlv2

    owl = write_owlv2(tmp_path / "owlv2")
    code, _, err = run_cli("serve", blob_tif, "--checkpoint", tiny_sam_checkpoint, "--detector", owl,
                           "--box-threshold", "0.2", "--port", _port(), "--out", tmp_path / "exports")
    assert code == 0, err
    assert "text box: owlv2-base" in err
    with TestClient(uvicorn_calls[0], base_url="http://127.0.0.1") as client:
        assert client.get("/everything/text").json() == {"available": True, "model": "owlv2-base", "reason": None}
    text = uvicorn_calls[0].state.terramask.everything.text
    assert text.detector.box_threshold == 0.2


def test_serve_without_a_text_model_says_how_to_turn_the_box_on(run_cli, blob_tif, tiny_sam_checkpoint,
                                                                 uvicorn_calls, tmp_path):
    code, _, err = run_cli("serve", blob_tif, "--checkpoint", tiny_sam_checkpoint, "--port", _port(),
                           "--out", tmp_path / "exports")
    assert code == 0, err
    assert "text box off (start with --detector" in err
    with TestClient(uvicorn_calls[0], base_url="http://127.0.0.1") as client:
        status = client.get("/everything/text").json()
    assert status["available"] is False and "--detector grounding-dino-tiny" in status["reason"]


def test_bad_text_models_fail_at_start_up_in_one_line(run_cli, blob_tif, tiny_sam_checkpoint, uvicorn_calls, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    for args, words in (
        (["--detector", tmp_path / "other"], "not a detector or SAM 3 checkpoint"),
        (["--detector", "yolo"], "unknown detector 'yolo'"),
        (["--box-threshold", "0.3"], "give it with --detector"),
    ):
        code, _, err = run_cli("serve", blob_tif, "--checkpoint", tiny_sam_checkpoint, "--port", _port(), *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and words in err and len(lines) == 1, err
    assert not uvicorn_calls
