"""How OpenVINO compiles models on this machine, chosen once at start-up.

- threads (``INFERENCE_NUM_THREADS``): ``threads`` if given, else ``$TERRAMASK_OPENVINO_THREADS``,
  else the cores this process may run on (``os.sched_getaffinity``; a container's CPU set,
  not the host's core count);
- precision (``INFERENCE_PRECISION_HINT``): ``f32`` unless ``$TERRAMASK_OPENVINO_PRECISION``
  asks for ``bf16`` or ``f16``, which are accepted only when OpenVINO reports the CPU
  supports them (``OPTIMIZATION_CAPABILITIES``). f32 is set explicitly: on CPUs with bf16
  OpenVINO would otherwise pick bf16 by itself and change results;
- performance hint ``LATENCY``: one image at a time, every thread on it (one stream);
- ``CACHE_DIR``: ``<cache>/openvino``, so a model is compiled once per machine and the
  next process loads the compiled blob.

No openvino import here: :func:`choose_settings` takes the CPU's capabilities as strings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramask.core.errors import InputError
from terramask.models.machine import threads_from_env, usable_cores

ENV_THREADS = "TERRAMASK_OPENVINO_THREADS"
ENV_PRECISION = "TERRAMASK_OPENVINO_PRECISION"
PRECISIONS = ("f32", "bf16", "f16")
# precision -> the OPTIMIZATION_CAPABILITIES entry that says the CPU runs it natively
_CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
HINT = "LATENCY"


@dataclass(frozen=True)
class OpenVinoSettings:
    """Compile settings for one process: ``threads``, ``precision`` (``f32``, ``bf16``,
    ``f16``), performance ``hint`` and the compiled-blob ``cache_dir`` (None: no cache)."""

    threads: int
    precision: str = "f32"
    hint: str = HINT
    cache_dir: Path | None = None

    def config(self) -> dict[str, Any]:
        """The ``compile_model`` configuration (OpenVINO property names)."""
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": self.hint,
        }
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        return config

    def describe(self) -> str:
        return f"{self.threads} thread(s), {self.precision}, {self.hint.lower()} hint"


def supported_precisions(capabilities: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The precisions of :data:`PRECISIONS` the CPU runs natively; ``f32`` always."""
    caps = {str(c).upper() for c in capabilities}
    return tuple(p for p in PRECISIONS if p == "f32" or _CAPABILITY[p] in caps)


def _threads(threads: int | None) -> int:
    if threads is not None:
        if int(threads) < 1:
            raise InputError(f"OpenVINO needs at least 1 thread, got {threads}")
        return int(threads)
    return threads_from_env(ENV_THREADS, usable_cores())


def _precision(precision: str | None, capabilities: list[str] | tuple[str, ...], cpu: str) -> str:
    source = "precision"
    if precision is None:
        precision = os.environ.get(ENV_PRECISION, "").strip().lower() or "f32"
        source = ENV_PRECISION
    if precision not in PRECISIONS:
        raise InputError(f"{source}={precision!r}: expected one of {', '.join(PRECISIONS)}")
    supported = supported_precisions(capabilities)
    if precision not in supported:
        raise InputError(
            f"{source}={precision}: this CPU ({cpu}) has no native {precision} in OpenVINO "
            f"(it supports {', '.join(supported)}); use f32"
        )
    return precision


def choose_settings(
    capabilities: list[str] | tuple[str, ...],
    cpu: str = "this CPU",
    threads: int | None = None,
    precision: str | None = None,
    cache_dir: Path | None = None,
) -> OpenVinoSettings:
    """The settings for a CPU with OpenVINO ``capabilities`` (``OPTIMIZATION_CAPABILITIES``,
    e.g. ``["FP32", "BF16", "INT8"]``) named ``cpu``. ``threads``/``precision`` override
    the environment; a precision the CPU lacks raises :class:`InputError`."""
    return OpenVinoSettings(
        threads=_threads(threads), precision=_precision(precision, capabilities, cpu), cache_dir=cache_dir
    )
