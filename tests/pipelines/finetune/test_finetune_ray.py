"""Data-parallel fine-tuning on Ray Train (``engine="ray"``): two local workers give the
run one process gives for the same seed and global batch (float tolerance), a Ray run
resumes like a local one, and a worker's terramask error comes back as itself."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from helpers.finetune_data import write_blob_dataset
from terramask.core.errors import InputError
from terramask.models.finetune.trainable import SingleProcess
from terramask.pipelines.finetune.config import FinetuneConfig
from terramask.pipelines.finetune.run import run_finetune


@pytest.fixture(scope="module")
def blobs5(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs5"), n_images=5, seed=3)


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.torch")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def _state(path):
    import torch

    state = torch.load(path, weights_only=True)
    return state["trainable"], json.loads(state["extra_json"])


@pytest.mark.slow
def test_two_ray_workers_equal_one_process_and_resume(blobs5, tiny_sam_checkpoint, tmp_path, local_ray):
    # 5 training objects, batch 3: steps of 3 objects (shared 2 + 1) and 2 (1 + 1)
    config = FinetuneConfig(str(blobs5), model=None, checkpoint=str(tiny_sam_checkpoint), epochs=2, val=0.2, lr=1e-3,
                            batch_size=3, eval_clicks=1, seed=1)
    alone = run_finetune(config, tmp_path / "alone", progress=False)

    ray_config = replace(config, engine="ray", workers=2)
    run_finetune(replace(ray_config, epochs=1), tmp_path / "ray", progress=False)  # one epoch, then
    info = run_finetune(ray_config, tmp_path / "ray", progress=False)  # the same run resumed to two

    assert info["training"]["epochs_done"] == 2 and info["training"]["engine"] == "ray"
    assert [h["objects"] for h in info["history"]] == [h["objects"] for h in alone["history"]] == [5, 5]
    for a, b in zip(alone["history"], info["history"], strict=True):
        for key in ("loss", "focal", "dice", "iou_mse"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        assert b["val_miou@1"] == pytest.approx(a["val_miou@1"], abs=1e-3)
    assert info["metrics"]["after"]["miou@1"] == pytest.approx(alone["metrics"]["after"]["miou@1"], abs=1e-3)
    w_alone, _ = _state(tmp_path / "alone" / "state.pt")
    w_ray, extra = _state(tmp_path / "ray" / "state.pt")
    assert extra["epoch"] == 2 and set(w_ray) == set(w_alone)
    worst = max(float((w_ray[k] - w_alone[k]).abs().max()) for k in w_alone)
    assert worst < 1e-4
    assert alone["history"][1]["loss"] != alone["history"][0]["loss"]
    assert (tmp_path / "ray" / "report.md").is_file() and (tmp_path / "ray" / "model.pth").is_file()


def test_a_worker_error_comes_back_as_itself():
    from terramask.core.errors import ModelError
    from terramask.models.finetune.distributed import _worker_error

    class WorkerGroupError(RuntimeError):  # Ray Train's failure: the workers' exceptions by rank
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    nan = ModelError("training stopped: the loss became NaN/inf")
    assert _worker_error(WorkerGroupError({1: KeyError("x"), 0: nan})) is nan
    other = _worker_error(WorkerGroupError({1: RuntimeError("gloo: connection closed\nby peer")}))
    assert isinstance(other, ModelError) and str(other) == "Ray worker 1 failed: by peer"
    assert isinstance(_worker_error(RuntimeError("")), ModelError)


def test_engine_options_are_checked():
    with pytest.raises(InputError, match="--engine"):
        FinetuneConfig("ds", engine="spark")
    with pytest.raises(InputError, match="--workers"):
        FinetuneConfig("ds", workers=2)
    with pytest.raises(InputError, match="CPU workers"):
        FinetuneConfig("ds", engine="ray", device="cuda")


def test_one_process_is_the_identity_collective():
    one = SingleProcess()
    values = np.array([1.0, 2.5])
    assert (one.rank, one.world) == (0, 1)
    assert np.array_equal(one.sum_array(values), values) and one.broadcast({"a": 1}) == {"a": 1}
