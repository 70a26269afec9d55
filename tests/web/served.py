"""``terramask serve`` in a subprocess on 127.0.0.1, for the limits tests that need a real
server: signals, process memory, a client that hangs up, requests in parallel; and
:func:`serve_in_thread`, an app served by uvicorn in this process (the browser tests).

The subprocess runs the real CLI entry point (``terramask.cli.main.main(["serve", ...])``).
``encoder_delay`` makes every encoder run sleep that long first (the tiny SAM encodes in
milliseconds; ViT-H on a CPU takes a minute), so a test can keep the model busy.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

TESTS = Path(__file__).resolve().parents[1]

_SCRIPT = """
import sys, time
delay = float(sys.argv[1])
if delay > 0:
    import terramask.models.resolve as resolve
    load = resolve.load_backend

    class Slow:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name
        def set_image(self, image):
            time.sleep(delay)  # like a large encoder: GIL released, not interruptible
            return self.inner.set_image(image)
        def predict(self, embedding, prompts, multimask=True):
            return self.inner.predict(embedding, prompts, multimask=multimask)

    resolve.load_backend = lambda *a, **k: Slow(load(*a, **k))
from terramask.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, timeout: float = 60) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free 127.0.0.1 port in a daemon thread;
    yields its URL, stops the server on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` now (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Served:
    """A ``terramask serve`` subprocess; ``with Served(...) as server: server.url``."""

    def __init__(self, scene: Path, checkpoint: Path, out: Path, encoder_delay: float = 0.0,
                 start_timeout: float = 120.0, more: tuple = ()) -> None:
        """``more``: further scene paths and options after the first scene."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", str(scene), *map(str, more), "--checkpoint", str(checkpoint), "--port", str(self.port),
                "--out", str(out)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(encoder_delay), *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(out.parent))
        self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not start within {timeout} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited (at most 30, then it is killed)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
