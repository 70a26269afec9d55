"""``terramask serve``: builds the app, listens on loopback by default, fails at start-up
with one line for a bad scene, model, band or port."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    """Register the subcommand as the lead will in cli/main.py (harmless once it is)."""
    from terramask.cli import main

    monkeypatch.setitem(main.SUBCOMMANDS, "serve", ("terramask.cli.serve", "Segment a scene interactively in a web browser."))


@pytest.fixture()
def uvicorn_calls(monkeypatch):
    """Replace uvicorn.run: record (app, host, port) instead of serving forever."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((app, host, port)))
    return calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_the_app_on_loopback(run_cli, blob_tif, tiny_sam_checkpoint, uvicorn_calls, tmp_path):
    port = _free_port()
    code, out, err = run_cli("serve", blob_tif, "--checkpoint", tiny_sam_checkpoint, "--port", port,
                             "--out", tmp_path / "exports")
    assert code == 0, err
    assert len(uvicorn_calls) == 1
    app, host, used_port = uvicorn_calls[0]
    assert (host, used_port) == ("127.0.0.1", port)
    assert f"http://127.0.0.1:{port}/" in err and "sam:tiny_sam" in err
    state = app.state.terramask
    assert state.out_dir == tmp_path / "exports"
    with TestClient(app, base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/healthz").json()["model"] == "sam:tiny_sam"
        assert client.get("/scene").json()["width"] == 320
    # a loopback server answers only to loopback names (no DNS rebinding from web pages)
    with TestClient(app, base_url="http://attacker.example") as client:
        assert client.get("/healthz").status_code == 400
    assert state.scene.closed, "the scene is closed when the server stops"


def test_serve_on_all_interfaces_warns(run_cli, blob_tif, tiny_sam_checkpoint, uvicorn_calls):
    code, _, err = run_cli("serve", blob_tif, "--checkpoint", tiny_sam_checkpoint, "--host", "0.0.0.0",
                           "--port", _free_port())
    assert code == 0, err
    assert "warning" in err and "0.0.0.0" in err
    app = uvicorn_calls[0][0]
    with TestClient(app, base_url="http://my-workstation.lan") as client:
        assert client.get("/healthz").status_code == 200


def test_bands_reach_the_scene(run_cli, tmp_path, tiny_sam_checkpoint, uvicorn_calls):
    import numpy as np

    from helpers.scenes import write_geotiff

    scene = write_geotiff(tmp_path / "four.tif", np.ones((4, 32, 40), dtype=np.uint16))
    code, _, err = run_cli("serve", scene, "--checkpoint", tiny_sam_checkpoint, "--bands", "4,3,2",
                           "--port", _free_port())
    assert code == 0, err
    with TestClient(uvicorn_calls[0][0], base_url="http://127.0.0.1") as client:
        assert client.get("/scene").json()["bands"] == [4, 3, 2]


@pytest.mark.parametrize(
    "extra, exit_code, words",
    [
        (("--model", "sam-vit-nonexistent"), 1, "sam-vit-nonexistent"),
        (("--bands", "9"), 2, "band 9"),
    ],
)
def test_startup_errors_are_one_line(run_cli, blob_tif, uvicorn_calls, extra, exit_code, words):
    code, out, err = run_cli("serve", blob_tif, *extra, "--port", _free_port())
    assert code == exit_code
    assert err.startswith("terramask: error:") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert uvicorn_calls == [], "nothing is served after a start-up error"


def test_missing_scene_is_one_line(run_cli, tmp_path, uvicorn_calls):
    code, _, err = run_cli("serve", tmp_path / "nope.tif", "--model", "classic", "--port", _free_port())
    assert code == 1
    assert err.strip() == f"terramask: error: {tmp_path / 'nope.tif'}: no such file"
    assert uvicorn_calls == []


def test_missing_weights_name_the_download_command(run_cli, blob_tif, uvicorn_calls):
    code, _, err = run_cli("serve", blob_tif, "--model", "sam-vit-b", "--port", _free_port())
    assert code == 1
    assert "terramask models download sam-vit-b" in err
    assert uvicorn_calls == []


def test_port_in_use_is_reported_before_loading_the_model(run_cli, blob_tif, uvicorn_calls):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, _, err = run_cli("serve", blob_tif, "--model", "sam-vit-nonexistent", "--port", port)
    assert code == 2
    assert f"127.0.0.1:{port} is already in use" in err
    assert uvicorn_calls == []


def test_help_explains_the_clicks(run_cli):
    code, out, _ = run_cli("serve", "--help")
    assert code == 0
    for words in ("right-click", "--host", "--port", "--checkpoint", "--bands", "--out"):
        assert words in out


def test_serve_lists_the_scenes_of_directories_and_files(run_cli, blob_tif, tiny_sam_checkpoint, uvicorn_calls,
                                                         tmp_path):
    import numpy as np

    from helpers.scenes import write_geotiff

    folder = tmp_path / "scenes"
    folder.mkdir()
    write_geotiff(folder / "b.tif", np.ones((3, 32, 40), dtype=np.uint16))
    write_geotiff(folder / "a.tif", np.ones((3, 32, 40), dtype=np.uint16))
    code, _, err = run_cli("serve", blob_tif, folder, "--checkpoint", tiny_sam_checkpoint, "--port", _free_port(),
                           "--out", tmp_path / "exports", "--max-upload-mb", "0")
    assert code == 0, err
    assert "and 2 more scene(s)" in err and "upload" not in err
    with TestClient(uvicorn_calls[0][0], base_url="http://127.0.0.1") as client:
        listing = client.get("/scenes").json()
        assert [s["id"] for s in listing["scenes"]] == [blob_tif.stem, "a", "b"] and listing["max_upload_mb"] == 0
        assert client.get("/scenes/a/default/default/scene").json()["name"] == "a.tif"


def test_a_directory_without_scenes_is_one_line(run_cli, tmp_path, uvicorn_calls):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("serve", tmp_path / "empty", "--model", "classic", "--port", _free_port())
    assert code != 0 and "no GeoTIFF, PNG or JPEG files" in err and len(err.strip().splitlines()) == 1
    assert uvicorn_calls == []
