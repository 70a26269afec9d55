"""`terramask finetune` end to end on a tiny random-weight SAM, then the run used as
--model RUN_DIR by predict, auto and eval; bad input gives one clean line."""

from __future__ import annotations

import json

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
