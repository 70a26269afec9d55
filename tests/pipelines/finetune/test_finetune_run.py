"""run_finetune end to end on tiny random-weight SAM and synthetic labelled blobs:
the run directory, the before/after gain, kill -9 and resume, NaN, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.finetune_data import write_blob_dataset
from terramask.core.errors import DatasetError, InputError, ModelError
from terramask.models.finetune.trainable import StepLosses
from terramask.pipelines.finetune.config import FinetuneConfig
from terramask.pipelines.finetune.run import run_finetune

SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs"), n_images=3)


def _config(blobs, ckpt, **kw) -> FinetuneConfig:
    base = dict(model=None, checkpoint=str(ckpt), epochs=2, val=0.34, lr=1e-3, eval_clicks=2,
                instances_per_image=1, batch_size=2)
    return FinetuneConfig(str(blobs), **{**base, **kw})


@pytest.mark.slow
def test_run_directory_holds_the_best_model_and_the_gain(blobs, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "run"
    info = run_finetune(_config(blobs, tiny_sam_checkpoint, epochs=3, instances_per_image=None), out, progress=False)
    assert {"model.pth", "terramask.json", "report.md", "state.pt"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "terramask.json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["base_model"]["family"] == "sam" and saved["classes"]["target_class"] == 1
    assert len(saved["data"]["split"]["val"]) == 1 and len(saved["data"]["split"]["train"]) == 2
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert saved["history"][-1]["loss"] < saved["history"][0]["loss"]
    before, after = saved["metrics"]["before"]["miou@1"], saved["metrics"]["after"]["miou@1"]
    assert after > before + 0.2
    # the after numbers are those of the kept (best) epoch
    best = max(h["val_miou@1"] for h in saved["history"])
    assert saved["best"]["val_miou@1"] == pytest.approx(best) == pytest.approx(after)
    report = (out / "report.md").read_text()
    assert "| miou@1 |" in report and f"{after:.3f}" in report
    # the run is a model: its checkpoint's hash is recorded
    from terramask.pipelines.finetune.report import file_sha256

    assert saved["checkpoint_sha256"] == file_sha256(out / "model.pth")


def _trainable(state_path):
    import torch

    state = torch.load(state_path, weights_only=True)
    return state["trainable"], json.loads(state["extra_json"])


_CHILD = """
import sys
from terramask.pipelines.finetune.config import FinetuneConfig
from terramask.pipelines.finetune.run import run_finetune
run_finetune(FinetuneConfig(sys.argv[1], model=None, checkpoint=sys.argv[2], epochs=4, val=0.0, lr=1e-3,
             instances_per_image=1, batch_size=2), sys.argv[3], progress=False)
"""


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(blobs, tiny_sam_checkpoint, tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(blobs), str(tiny_sam_checkpoint), str(killed)], env=env)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "state.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    _, extra = _trainable(killed / "state.pt")
    assert 1 <= extra["epoch"] < 4, "the child must be killed in the middle of the run"
    cfg = FinetuneConfig(str(blobs), model=None, checkpoint=str(tiny_sam_checkpoint), epochs=4, val=0.0, lr=1e-3,
                         instances_per_image=1, batch_size=2)
    run_finetune(cfg, killed, progress=False)  # same command: resumes
    straight = tmp_path / "straight"
    run_finetune(cfg, straight, progress=False)
    (w_killed, e_killed), (w_straight, e_straight) = _trainable(killed / "state.pt"), _trainable(straight / "state.pt")
    import torch

    assert e_killed["epoch"] == e_straight["epoch"] == 4
    assert [h["loss"] for h in e_killed["history"]] == pytest.approx([h["loss"] for h in e_straight["history"]], rel=1e-5)
    assert set(w_killed) == set(w_straight)
    for name in w_killed:
        assert torch.allclose(w_killed[name], w_straight[name], rtol=1e-5, atol=1e-6), name


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(blobs, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "run"
    run_finetune(_config(blobs, tiny_sam_checkpoint, epochs=1, val=0.0), out, progress=False)
    with pytest.raises(InputError, match="other settings.*lr"):
        run_finetune(_config(blobs, tiny_sam_checkpoint, epochs=1, val=0.0, lr=5e-4), out, progress=False)


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_best_checkpoint(blobs, tiny_sam_checkpoint, tmp_path):
    from terramask.models.resolve import load_trainer

    calls = {"n": 0}

    def factory(backend, config):
        trainer = load_trainer(backend, config.train, lr=config.lr)
        real = trainer.train_step

        def step(items):
            calls["n"] += 1
            if calls["n"] > 2:  # epoch 1 has 2 steps; epoch 2 diverges
                return StepLosses(float("nan"), float("nan"), 0.0, 0.0, finite=False)
            return real(items)

        trainer.train_step = step  # type: ignore[method-assign]
        return trainer

    out = tmp_path / "run"
    with pytest.raises(ModelError, match=r"NaN.*epoch 2.*best checkpoint \(epoch 1\)"):
        run_finetune(_config(blobs, tiny_sam_checkpoint, epochs=3, val=0.0), out, progress=False, trainer_factory=factory)
    assert (out / "model.pth").is_file()
    assert json.loads((out / "terramask.json").read_text())["best"]["epoch"] == 1


def test_class_absent_from_the_masks(blobs, tmp_path):
    with pytest.raises(DatasetError, match="class 7 has no object"):
        run_finetune(FinetuneConfig(str(blobs), model="classic", target_class=7), tmp_path / "run")


def test_no_usable_object(blobs, tmp_path):
    with pytest.raises(DatasetError, match="smaller than the minimum area"):
        run_finetune(FinetuneConfig(str(blobs), model="classic", min_area=100000), tmp_path / "run")


def test_images_and_masks_of_different_sizes(tmp_path):
    from PIL import Image

    ds = write_blob_dataset(tmp_path / "ds", n_images=2)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(ds / "masks" / "img01.png")
    with pytest.raises(DatasetError, match="sizes differ"):
        run_finetune(FinetuneConfig(str(ds), model="classic"), tmp_path / "run")


def test_a_model_without_a_trainable_decoder(blobs, tmp_path):
    with pytest.raises(ModelError, match="no trainable mask decoder"):
        run_finetune(FinetuneConfig(str(blobs), model="classic", val=0.0), tmp_path / "run")


def test_validation_split_needs_images_left_to_train(tmp_path):
    ds = write_blob_dataset(tmp_path / "ds", n_images=1)
    with pytest.raises(InputError, match="--val 0"):
        run_finetune(FinetuneConfig(str(ds), model="classic"), tmp_path / "run")


def test_config_is_checked_once():
    with pytest.raises(InputError, match="--epochs"):
        FinetuneConfig("ds", epochs=0)
    with pytest.raises(InputError, match="--prompts"):
        FinetuneConfig("ds", prompts="scribbles")
    with pytest.raises(InputError, match="--val"):
        FinetuneConfig("ds", val=1.0)
