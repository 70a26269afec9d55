"""OpenVINO backends over terramask's ONNX exports (:mod:`terramask.models.onnx.export`).

:class:`OpenVinoSamBackend` (SAM v1 of any size, MobileSAM) and :class:`OpenVinoSam2Backend`
(SAM 2 / 2.1) are the ONNX Runtime backends with one step replaced: the exported
``encoder.onnx`` and ``decoder.onnx`` are read by OpenVINO and compiled for this CPU
(:mod:`terramask.models.openvino.settings`) instead of opened as onnxruntime sessions, and
so are the staged decoder graphs (:mod:`terramask.models.onnx.staged`).
Everything else -- resize, normalisation, prompt frames, multimask choice, SAM 2's
stability fallback, the upscaling of low-res logits -- is the ONNX backends' code, so the
two runtimes cannot drift apart. Shapes and dtypes are theirs: ``image (1, 3, 1024, 1024)``
float32 in, ``(1, 256, 64, 64)`` float32 embeddings (SAM 2 adds two high-resolution maps),
decoder batch and point count dynamic.

``weights_id`` ends in ``:openvino`` (``:openvino-bf16`` / ``:openvino-f16`` for the
reduced precisions), so the embedding cache never mixes these embeddings with other
runtimes'. Calls are safe from several threads: each thread gets its own infer request.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import ModelError
from terramask.core.lazy import require
from terramask.models.onnx.backend import OnnxSamBackend
from terramask.models.onnx.export import read_metadata
from terramask.models.onnx.sam2_backend import OnnxSam2Backend
from terramask.models.openvino.settings import OpenVinoSettings, choose_settings

INSTALL_EXTRA = "openvino"


@functools.lru_cache(maxsize=1)
def ov_core() -> Any:
    """The process's ``openvino.Core`` (raises the install hint when openvino is missing)."""
    ov = require("openvino", INSTALL_EXTRA)
    return ov.Core()


def cpu_description() -> tuple[str, tuple[str, ...]]:
    """``(name, capabilities)`` of the CPU as OpenVINO sees it, e.g.
    ``("Intel(R) Xeon(R) ...", ("FP32", "BF16", "INT8", ...))``."""
    core = ov_core()
    name = str(core.get_property("CPU", "FULL_DEVICE_NAME")).strip()
    caps = tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return name, caps


def machine_settings(threads: int | None = None, precision: str | None = None) -> OpenVinoSettings:
    """:func:`~terramask.models.openvino.settings.choose_settings` for this CPU, with the
    compiled-blob cache in ``<cache>/openvino``."""
    from terramask.models.cachedir import cache_dir

    name, caps = cpu_description()
    return choose_settings(caps, cpu=name, threads=threads, precision=precision, cache_dir=cache_dir() / "openvino")


class CompiledGraph:
    """An OpenVINO compiled model called like an onnxruntime session:
    ``run(None, feeds) -> [outputs in graph order]`` (numpy arrays the caller owns)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._outputs = list(compiled.outputs)
        self._local = threading.local()

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer(feeds)  # copies the outputs out of the request's tensors
        return [np.asarray(results[port]) for port in self._outputs]


def compile_graph(path: Path, settings: OpenVinoSettings) -> CompiledGraph:
    """Read an ONNX file and compile it for the CPU with ``settings``; any OpenVINO
    failure becomes one :class:`ModelError` line naming the file."""
    core = ov_core()
    try:
        compiled = core.compile_model(str(path), "CPU", settings.config())
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ traces
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"OpenVINO cannot compile {path}: {first[:300]}") from None
    return CompiledGraph(compiled)


class OpenVinoSessions:
    """The OpenVINO half of a backend: mixed in before an ONNX backend class, it replaces
    its onnxruntime sessions with OpenVINO compiled models."""

    quantized: bool
    directory: Path
    threads: int
    settings: OpenVinoSettings

    def __init__(
        self, directory: str | os.PathLike[str], name: str | None = None, threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        self._precision = precision
        super().__init__(directory, name=name, threads=threads)  # type: ignore[call-arg]

    @property
    def runtime(self) -> str:
        precision = self.settings.precision
        return "openvino" if precision == "f32" else f"openvino-{precision}"

    def _open_sessions(self, encoder: Path, decoder: Path, threads: int | None, providers: list[str] | None) -> None:
        self.settings = machine_settings(threads, self._precision)
        self.threads = self.settings.threads
        self._encoder = self._open_graph(encoder)
        self._decoder = self._open_graph(decoder)

    def _open_graph(self, path: Path) -> CompiledGraph:
        return compile_graph(path, self.settings)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, directory={str(self.directory)!r}, {self.settings.describe()})"  # type: ignore[attr-defined]


class OpenVinoSamBackend(OpenVinoSessions, OnnxSamBackend):
    """SAM (any size) / MobileSAM from an ONNX export, run by OpenVINO; the contract of
    :class:`terramask.models.sam.backend.SamBackend`."""


class OpenVinoSam2Backend(OpenVinoSessions, OnnxSam2Backend):
    """SAM 2 / 2.1 from an ONNX export, run by OpenVINO; the contract of
    :class:`terramask.models.sam2.backend.Sam2Backend`."""


def open_openvino_backend(
    directory: str | os.PathLike[str], name: str | None = None, threads: int | None = None, precision: str | None = None
) -> OnnxSamBackend:
    """The OpenVINO backend for an export directory (SAM / MobileSAM or SAM 2)."""
    family = read_metadata(directory).get("family")
    cls = OpenVinoSam2Backend if family == "sam2" else OpenVinoSamBackend
    return cls(directory, name=name, threads=threads, precision=precision)
