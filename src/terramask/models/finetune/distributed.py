"""Data-parallel fine-tuning on Ray Train's torch integration (``terramask finetune --engine ray``).

:func:`run_data_parallel` starts a :class:`ray.train.torch.TorchTrainer` with ``workers``
CPU workers; Ray Train sets up a ``torch.distributed`` process group (gloo) among them,
and each worker calls ``loop(TorchCollective())``. The loop (the fine-tuning pipeline)
holds one replica of the model per worker, steps on its share of every global batch and
sums the gradients over the group (:meth:`TorchCollective.sum_gradients`: one
``all_reduce`` of the flattened gradients per step), so the replicas make identical
AdamW steps: the gradient averaging of ``DistributedDataParallel``, done explicitly
because training calls the decoder's ``predict_masks`` rather than a module's
``forward``.

Ray is started here (``num_cpus = workers``, no dashboard) unless it already runs in
the process or ``RAY_ADDRESS`` names a cluster, and shut down afterwards only if
started here. The workers get the driver's ``TERRAMASK_*`` environment (embedding
cache location); on a multi-node cluster the run directory and the cache must be on
storage every node sees. A worker's terramask error comes back as that error (one
clean line in the CLI); anything else as :class:`ModelError`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, Callable

import numpy as np

from terramask.core.errors import ModelError, TerramaskError
from terramask.core.lazy import require
from terramask.models.torch_utils import torch_module

log = logging.getLogger(__name__)


class TorchCollective:
    """The :class:`~terramask.models.finetune.trainable.Collective` of an initialised
    ``torch.distributed`` process group (what Ray Train sets up in each worker)."""

    def __init__(self) -> None:
        torch = torch_module()
        self._dist = torch.distributed
        if not self._dist.is_available() or not self._dist.is_initialized():
            raise ModelError("data-parallel training needs an initialised torch.distributed process group")
        self._torch = torch
        self.rank = int(self._dist.get_rank())
        self.world = int(self._dist.get_world_size())

    def sum_gradients(self, grads: list[Any]) -> None:
        """Sum ``grads`` (tensors) over the workers in place: one flat ``all_reduce``."""
        if not grads:
            return
        flat = self._torch.cat([g.reshape(-1) for g in grads])
        self._dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum_array(self, values: np.ndarray) -> np.ndarray:
        t = self._torch.as_tensor(np.asarray(values, dtype=np.float64).copy())
        self._dist.all_reduce(t)
        return np.asarray(t.numpy(), dtype=np.float64)

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        self._dist.barrier()


def _worker_main(payload: dict) -> None:
    """What each Ray Train worker runs: the driver's environment, then the loop."""
    os.environ.update(payload["env"])
    payload["loop"](TorchCollective())


def run_data_parallel(loop: Callable[[TorchCollective], Any], workers: int) -> None:
    """Run ``loop`` on ``workers`` Ray Train workers (see the module docstring).

    ``loop`` must be picklable (a module-level function or a ``functools.partial`` of
    one). Raises the first failing worker's :class:`TerramaskError`, else
    :class:`ModelError`.
    """
    ray = require("ray", extra="ray")
    ray_torch = require("ray.train.torch", extra="ray")
    ray_train = require("ray.train", extra="ray")
    if workers < 1:
        raise ModelError(f"the number of Ray workers must be >= 1, got {workers}")
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if not os.environ.get("RAY_ADDRESS"):
            kwargs.update(num_cpus=workers, include_dashboard=False)
        ray.init(**kwargs)
        started = True
    storage = tempfile.mkdtemp(prefix="terramask-ray-train-")
    env = {k: v for k, v in os.environ.items() if k.startswith("TERRAMASK_")}
    try:
        trainer = ray_torch.TorchTrainer(
            _worker_main,
            train_loop_config={"loop": loop, "env": env},
            scaling_config=ray_train.ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
            torch_config=ray_torch.TorchConfig(backend="gloo"),
            run_config=ray_train.RunConfig(storage_path=storage, name="finetune"),
        )
        log.info("data-parallel fine-tuning on %d Ray worker(s)", workers)
        trainer.fit()
    except Exception as exc:
        raise _worker_error(exc) from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()


def _worker_error(exc: Exception) -> Exception:
    """The error to raise for a failed ``fit``: the lowest-rank worker's terramask error."""
    if isinstance(exc, TerramaskError):
        return exc
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        err = failures[rank]
        if isinstance(err, TerramaskError):
            return err
    if failures:
        rank = min(failures)
        return ModelError(f"Ray worker {rank} failed: {str(failures[rank]).strip().splitlines()[-1][:300]}")
    return ModelError(f"data-parallel training on Ray failed: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__}")
