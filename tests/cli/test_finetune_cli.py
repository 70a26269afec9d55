"""`terramask finetune` end to end on a tiny random-weight SAM, then the run used as
--model RUN_DIR by predict, auto, eval, serve and find, and exported by `models
export-onnx RUN_DIR` (ONNX gives the torch run's masks); bad input gives one clean line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.finetune_data import write_blob_dataset


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs"), n_images=3)


@pytest.mark.slow
def test_finetune_then_every_command_takes_the_run_directory(blobs, tiny_sam_checkpoint, blob_tif, tmp_path, run_cli):
    run = tmp_path / "run"
    code, stdout, err = run_cli("finetune", blobs, "--checkpoint", tiny_sam_checkpoint, "--out", run, "--epochs", 1,
                                "--val", 0.34, "--lr", 1e-3, "--instances-per-image", 1, "--eval-clicks", 1, "-q")
    assert code == 0, err
    assert "| miou@1 |" in stdout and f"--model {run}" in stdout
    info = json.loads((run / "terramask.json").read_text())
    assert info["training"]["epochs_done"] == 1 and info["base_model"]["family"] == "sam"

    code, stdout, err = run_cli("predict", blob_tif, "--point", "140,100", "--model", run, "--out", tmp_path / "pred")
    assert code == 0, err
    assert json.loads((tmp_path / "pred" / "result.json").read_text())["model"] == info["name"]

    code, _, err = run_cli("auto", blob_tif, "--model", run, "--points-per-side", 4, "--out", tmp_path / "auto", "-q")
    assert code == 0, err
    assert (tmp_path / "auto" / "summary.json").is_file()

    code, stdout, err = run_cli("eval", blobs, "--model", run, "--max-clicks", 1, "--no-plots", "--out", tmp_path / "eval", "-q")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["models"][str(run)]["miou@1"] is not None

    _serve_takes_the_run(run, info, blob_tif, tmp_path, run_cli)
    _find_takes_the_run(run, blob_tif, tmp_path, run_cli)

    # export-onnx RUN_DIR: the fine-tuned checkpoint, and ONNX gives the torch fine-tuned masks
    onnx_dir = tmp_path / "onnx"
    code, stdout, err = run_cli("models", "export-onnx", run, "--out", onnx_dir)
    assert code == 0, err
    meta = json.loads((onnx_dir / "terramask-onnx.json").read_text())
    assert meta["source_sha256"] == info["checkpoint_sha256"] and meta["model"] == info["name"]
    _onnx_gives_the_fine_tuned_masks(run, onnx_dir, tiny_sam_checkpoint)
    code, _, err = run_cli("predict", blob_tif, "--point", "140,100", "--model", run, "--runtime", "onnx",
                           "--out", tmp_path / "pred_onnx")
    assert code == 0, err
    torch_mask = np.load(tmp_path / "pred" / "logits.npy") > 0
    onnx_mask = np.load(tmp_path / "pred_onnx" / "logits.npy") > 0
    assert np.mean(torch_mask != onnx_mask) <= 1e-3


def _serve_takes_the_run(run, info, blob_tif, tmp_path, run_cli):
    import uvicorn
    from fastapi.testclient import TestClient

    from terramask.cli import main

    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append(app))
        mp.setitem(main.SUBCOMMANDS, "serve", ("terramask.cli.serve", "Segment a scene interactively in a web browser."))
        code, _, err = run_cli("serve", blob_tif, "--model", run, "--port", _free_port(), "--out", tmp_path / "exports")
    assert code == 0, err
    with TestClient(calls[0], base_url="http://127.0.0.1") as client:
        assert client.get("/healthz").json()["model"] == info["name"]


def _find_takes_the_run(run, blob_tif, tmp_path, run_cli):
    import pyogrio
    import shapely

    from helpers.scenes import UTM33_TRANSFORM

    (x0, y0), (x1, y1) = UTM33_TRANSFORM * (100, 80), UTM33_TRANSFORM * (180, 120)
    ex = tmp_path / "ex.gpkg"
    pyogrio.raw.write(str(ex), np.array([shapely.to_wkb(shapely.box(x0, y1, x1, y0))], dtype=object), [], [],
                      geometry_type="Unknown", crs="EPSG:32633", driver="GPKG")
    code, _, err = run_cli("find", blob_tif, "--exemplars", ex, "--model", run, "--similarity", "-1",
                           "--max-points", "4", "--out", tmp_path / "find", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "find" / "summary.json").read_text())["mode"] == "find-similar"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _onnx_gives_the_fine_tuned_masks(run, onnx_dir, base_checkpoint):
    from terramask.core.prompts import Prompts
    from terramask.models.resolve import load_backend

    rng = np.random.default_rng(0)
    image = rng.integers(20, 60, size=(64, 64, 3)).astype(np.uint8)
    image[10:40, 12:44] += 150
    prompts = Prompts(points=np.array([[28.0, 25.0]]), labels=np.array([1]))
    results = {}
    for key, backend in (("torch", load_backend(str(run))), ("onnx", load_backend(checkpoint=onnx_dir, runtime="onnx")),
                         ("base", load_backend(checkpoint=base_checkpoint))):
        results[key] = backend.predict(backend.set_image(image), prompts, multimask=True)
    ours, theirs, base = results["onnx"], results["torch"], results["base"]
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4)
    np.testing.assert_allclose(ours["low_res_logits"], theirs["low_res_logits"], atol=1e-2, rtol=1e-3)
    assert np.mean(ours.masks != theirs.masks) <= 1e-3
    # and those are the fine-tuned weights, not the base model's
    assert np.abs(theirs["low_res_logits"] - base["low_res_logits"]).max() > 0.1


def test_a_model_without_a_trainable_decoder_is_one_line(blobs, tmp_path, run_cli):
    code, _, err = run_cli("finetune", blobs, "--model", "classic", "--out", tmp_path / "run")
    assert code == 1
    assert err.startswith("terramask: error: ") and "no trainable mask decoder" in err and len(err.strip().splitlines()) == 1


def test_class_absent_is_one_line(blobs, tmp_path, run_cli):
    code, _, err = run_cli("finetune", blobs, "--class", 9, "--model", "classic", "--out", tmp_path / "run")
    assert code == 2
    assert "class 9 has no object" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_lists_the_options(run_cli):
    code, stdout, _ = run_cli("finetune", "--help")
    assert code == 0
    for option in ("--train", "--prompts", "--epochs", "--val", "--class", "--seed", "decoder+lora"):
        assert option in stdout
