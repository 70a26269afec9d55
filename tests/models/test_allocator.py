"""configure_allocator: glibc malloc tuning on unless switched off, applied once,
idempotent, and a no-op elsewhere. Each check runs in a fresh interpreter, because malloc settings are
process-wide and cannot be undone."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from terramask.models import allocator


def _run(code: str, env_mode: str | None = None) -> dict:
    import os

    env = dict(os.environ)
    env.pop(allocator.ENV, None)
    if env_mode is not None:
        env[allocator.ENV] = env_mode
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


PROBE = """
import json
from terramask.models.allocator import configure_allocator
a = configure_allocator({arg})
b = configure_allocator("aggressive")
print(json.dumps({{"mode": a.mode, "settings": a.settings, "failed": list(a.failed), "same": a is b}}))
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc_only
def test_malloc_is_tuned_by_default():
    """On unless switched off (it measured faster on the AMD machines and within 2 % on
    the Intel ones); an unknown value keeps the default."""
    state = _run(PROBE.format(arg="None"))
    assert state["mode"] == "tuned" and state["same"] is True
    assert _run(PROBE.format(arg="None"), env_mode="fastest")["mode"] == "tuned"


@glibc_only
def test_tuned_settings_are_applied_once():
    state = _run(PROBE.format(arg="None"), env_mode="tuned")
    assert state["mode"] == "tuned" and state["same"] is True and state["failed"] == []
    assert state["settings"] == {
        "M_MMAP_THRESHOLD": allocator.MMAP_THRESHOLD,
        "M_TRIM_THRESHOLD": allocator.TRIM_THRESHOLD,
        "M_TOP_PAD": allocator.TOP_PAD,
    }


@glibc_only
def test_aggressive_mode_also_disables_mmap():
    state = _run(PROBE.format(arg="None"), env_mode="aggressive")
    assert state["mode"] == "aggressive" and state["settings"]["M_MMAP_MAX"] == 0


@pytest.mark.parametrize("value", ["default", "off"])
def test_environment_can_switch_the_tuning_off(value):
    state = _run(PROBE.format(arg="None"), env_mode=value)
    assert state == {"mode": "default", "settings": {}, "failed": [], "same": True}


@glibc_only
def test_large_blocks_are_reused_not_remapped():
    """With the tuning, a 16 MiB block comes from the heap and stays there when freed: it
    is not a separate mapping; with glibc's defaults (dynamic threshold starting at
    128 KiB) it is mmapped and unmapped again. Observed through mallinfo2's mmap count."""
    code = """
import ctypes, json
from terramask.models.allocator import configure_allocator
import sys
if sys.argv[1:] == ["tune"]:
    configure_allocator("tuned")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
p = libc.malloc(16 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(p)
print(json.dumps({"mmapped_blocks": mapped}))
"""
    import os

    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    tuned = subprocess.run([sys.executable, "-c", code, "tune"], capture_output=True, text=True, check=True, env=env)
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(tuned.stdout)["mmapped_blocks"] == 0
    assert json.loads(plain.stdout)["mmapped_blocks"] >= 1


def test_unsupported_platform_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_STATE", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    monkeypatch.setenv(allocator.ENV, "tuned")
    state = allocator.configure_allocator()
    assert state.mode == "unsupported" and state.settings == {}
    assert allocator.allocator_state() is state
