"""Which runtime encodes fastest on this machine, per model family: measured, not assumed.

``--runtime auto`` and ``terramask doctor`` use this module. A measurement times one
encode of a fixed random ``1024 x 1024`` RGB tile (seed 0) with each available runtime,
after one untimed warm-up encode (first-call compilation and allocation are not what a
tile costs), and keeps the fastest. Results are cached in ``<cache>/runtime-choice.json``
under :func:`terramask.models.machine.machine_key` (CPU model and flags, usable cores,
versions of terramask, numpy, torch, onnxruntime, openvino), so a new CPU, container size
or package upgrade measures again, and nothing else does.

Only runtimes that keep results are candidates (``torch``, ``onnx``, ``openvino``): int8
changes masks, so it is never picked automatically. Loading a backend per runtime is
injected (:func:`choose_runtime`'s ``load``), so this module picks no family itself and
tests drive the choice with made-up timings.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import ModelError
from terramask.models.base import Backend
from terramask.models.machine import cpu_info, machine_key, package_versions, usable_cores

log = logging.getLogger(__name__)

CHOICE_FILE = "runtime-choice.json"
FORMAT_VERSION = 1
# result-preserving runtimes, in the order a tie is broken
CANDIDATES = ("torch", "onnx", "openvino")
# runtime -> modules it needs (the ONNX-based ones export through torch and onnx)
NEEDS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "onnx": ("torch", "onnx", "onnxruntime"),
    "openvino": ("torch", "onnx", "openvino"),
}
TILE_SIDE = 1024

Timer = Callable[[Backend, np.ndarray], float]


@dataclass(frozen=True)
class Measurement:
    """One family's timings on this machine: ``seconds`` per runtime for one encode of the
    fixed tile, ``failed`` runtime -> the one-line reason it could not run, the ``model``
    measured and when (``measured_at``, ISO 8601 UTC)."""

    family: str
    model: str
    seconds: dict[str, float]
    failed: dict[str, str] = field(default_factory=dict)
    measured_at: str = ""

    @property
    def fastest(self) -> str:
        """The runtime with the fewest seconds (ties: the order of :data:`CANDIDATES`)."""
        order = {name: i for i, name in enumerate(CANDIDATES)}
        return min(self.seconds, key=lambda r: (self.seconds[r], order.get(r, len(order))))

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "fastest": self.fastest, "seconds": self.seconds, "failed": self.failed,
                "measured_at": self.measured_at}

    @classmethod
    def from_json(cls, family: str, data: dict[str, Any]) -> Measurement:
        seconds = {str(k): float(v) for k, v in dict(data["seconds"]).items()}
        if not seconds:
            raise ValueError("no timings")
        return cls(family, str(data["model"]), seconds, {str(k): str(v) for k, v in dict(data.get("failed") or {}).items()},
                   str(data.get("measured_at", "")))


def available_runtimes() -> tuple[str, ...]:
    """The :data:`CANDIDATES` whose packages are installed (checked without importing them)."""
    return tuple(r for r in CANDIDATES if all(importlib.util.find_spec(m) is not None for m in NEEDS[r]))


def fixed_tile(side: int = TILE_SIDE) -> np.ndarray:
    """The measurement tile: ``(side, side, 3)`` uint8, uniform random, seed 0."""
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def time_encode(backend: Backend, tile: np.ndarray) -> float:
    """Seconds of one ``set_image(tile)``, after one untimed warm-up call."""
    backend.set_image(tile)
    start = time.perf_counter()
    backend.set_image(tile)
    return time.perf_counter() - start


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def measure_family(
    family: str, model: str, runtimes: tuple[str, ...], load: Callable[[str], Backend], timer: Timer = time_encode
) -> Measurement:
    """Time ``timer(load(runtime), fixed_tile())`` for each of ``runtimes``. A runtime that
    fails to load or encode is recorded in ``failed``; :class:`ModelError` when all fail."""
    tile = fixed_tile()
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for runtime in runtimes:
        backend: Backend | None = None
        try:
            backend = load(runtime)
            seconds[runtime] = float(timer(backend, tile))
        except Exception as exc:  # one runtime failing must not stop the others being measured
            failed[runtime] = _reason(exc)
            log.info("runtime %s failed for %s: %s", runtime, model, failed[runtime])
        finally:
            del backend  # free the model before the next one loads
            gc.collect()
    if not seconds:
        detail = "; ".join(f"{r}: {why}" for r, why in failed.items()) or "no runtime installed"
        raise ModelError(f"no runtime could encode with {model} ({detail})")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Measurement(family, model, seconds, failed, stamp)


class ChoiceCache:
    """The measurements of one machine in a JSON file shared by every machine key.

    ``path`` defaults to ``<cache>/runtime-choice.json``, ``key`` to this machine's
    :func:`~terramask.models.machine.machine_key`. An unreadable or malformed file is
    treated as empty (it is only a cache) and replaced on the next :meth:`put`.
    """

    def __init__(self, path: Path | None = None, key: str | None = None) -> None:
        if path is None:
            from terramask.models.cachedir import cache_dir

            path = cache_dir(create=False) / CHOICE_FILE  # reading creates nothing
        self.path = Path(path)
        self.machine = describe_machine()
        self.key = key or str(self.machine["key"])

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT_VERSION, "machines": {}}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the runtime choice cache %s: %s", self.path, exc)
            return {"format": FORMAT_VERSION, "machines": {}}
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or not isinstance(data.get("machines"), dict):
            log.warning("ignoring the runtime choice cache %s: not format %d", self.path, FORMAT_VERSION)
            return {"format": FORMAT_VERSION, "machines": {}}
        return data

    def measurements(self) -> dict[str, Measurement]:
        """family -> :class:`Measurement` for this machine key (malformed entries skipped)."""
        entry = self._load()["machines"].get(self.key) or {}
        found: dict[str, Measurement] = {}
        for family, data in dict(entry.get("families") or {}).items():
            try:
                found[family] = Measurement.from_json(family, data)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring a malformed %s entry in %s", family, self.path)
        return found

    def get(self, family: str) -> Measurement | None:
        return self.measurements().get(family)

    def put(self, measurement: Measurement) -> None:
        """Record ``measurement`` for this machine key (atomic rewrite of the file)."""
        from terramask.io.atomic import write_json

        data = self._load()
        entry = data["machines"].setdefault(self.key, {})
        entry["machine"] = {k: v for k, v in self.machine.items() if k != "key"}
        entry.setdefault("families", {})[measurement.family] = measurement.to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, data)


def describe_machine() -> dict[str, Any]:
    """``cpu``, notable ``flags``, usable ``cores``, package ``versions`` and the ``key``."""
    cpu, cores, versions = cpu_info(), usable_cores(), package_versions()
    return {"cpu": cpu.model, "flags": list(cpu.notable()), "cores": cores, "versions": versions,
            "key": machine_key(cpu, cores, versions)}


def choose_runtime(
    family: str,
    model: str,
    load: Callable[[str], Backend],
    cache: ChoiceCache | None = None,
    runtimes: tuple[str, ...] | None = None,
    timer: Timer = time_encode,
) -> str:
    """The fastest runtime for ``family`` on this machine: the cached measurement, else
    measured now with ``model`` (``load(runtime)`` builds its backend), with a one-line
    notice, and cached."""
    cache = cache or ChoiceCache()
    runtimes = available_runtimes() if runtimes is None else runtimes
    known = cache.get(family)
    if known is not None and known.fastest in runtimes:
        return known.fastest
    log.warning("measuring which runtime encodes %s models fastest on this machine (%s; once, cached in %s)",
                family, ", ".join(runtimes), cache.path)
    measured = measure_family(family, model, runtimes, load, timer)
    cache.put(measured)
    log.warning("fastest runtime for %s here: %s (%s)", family, measured.fastest, format_seconds(measured))
    return measured.fastest


def format_seconds(measurement: Measurement) -> str:
    """``"torch 25.30 s, onnx 13.20 s, openvino failed"`` in candidate order."""
    parts = [f"{r} {measurement.seconds[r]:.2f} s" if r in measurement.seconds else f"{r} failed"
             for r in CANDIDATES if r in measurement.seconds or r in measurement.failed]
    return ", ".join(parts)
