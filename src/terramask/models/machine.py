"""What this machine is, for choices that depend on it (the fastest runtime, thread counts).

:func:`cpu_info` reads the CPU's model name and instruction-set flags (``/proc/cpuinfo`` on
Linux, ``platform`` elsewhere); :func:`usable_cores` counts the cores this process may run on;
:func:`package_versions` reads installed versions without importing the packages;
:func:`machine_key` hashes all of it, so a measurement made on one CPU, core count or set
of runtime versions is never reused on another.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# packages whose versions change which runtime is fastest
RUNTIME_PACKAGES = ("terramask", "numpy", "torch", "onnxruntime", "openvino")
# flags worth showing to a person (the key uses every flag)
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "f16c")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """``model`` name and the sorted instruction-set ``flags`` of the first CPU."""

    model: str
    flags: tuple[str, ...]

    def notable(self) -> tuple[str, ...]:
        return tuple(f for f in NOTABLE_FLAGS if f in self.flags)


def parse_cpuinfo(text: str) -> CpuInfo:
    """:class:`CpuInfo` from the text of ``/proc/cpuinfo`` (first processor's entries;
    ``flags`` on x86, ``Features`` on ARM)."""
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if not model and key in ("model name", "cpu model", "hardware"):
            model = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = value
        if model and flags:
            break
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", tuple(sorted(set(flags.split()))))


def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo`."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux
        return CpuInfo(platform.processor() or platform.machine() or "unknown CPU", ())


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity set, e.g. a container's), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_from_env(variable: str, default: int) -> int:
    """Thread count from the environment variable ``variable`` (a whole number >= 1), else
    ``default``; a bad value is an :class:`InputError` naming the variable."""
    from terramask.core.errors import InputError

    env = os.environ.get(variable, "").strip()
    if not env:
        return default
    try:
        n = int(env)
    except ValueError:
        raise InputError(f"{variable} must be a whole number of threads, got {env!r}") from None
    if n < 1:
        raise InputError(f"{variable} must be >= 1, got {n}")
    return n


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_key(cpu: CpuInfo, cores: int, versions: dict[str, str | None]) -> str:
    """16 hex digits naming ``cpu`` (model and flags), ``cores`` and package ``versions``."""
    blob = json.dumps({"cpu": cpu.model, "flags": list(cpu.flags), "cores": cores, "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
