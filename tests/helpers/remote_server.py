"""The loopback :class:`~helpers.http_server.FileServer` in a child process, for GDAL.

GDAL keeps Python's GIL during some calls that read over HTTP (e.g. rasterio's
``get_tag_item``), so a server thread in the test process could not answer and the read
would hang until curl's timeout. This runs the same server (Range support, switches,
request counts) in a child process, controlled over HTTP:

- ``GET /__stats__`` -> ``{"requests": n, "bytes_sent": n, "statuses": [...]}``;
- ``GET /__set__?status=403&fail_first=2&drop_from=N&reset=1`` sets the switches
  (``none`` clears one) and, with ``reset``, forgets the requests so far.

Usage::

    with RemoteServer(directory) as server:
        url = server.url("scene.tif")
        ...
        assert server.stats()["bytes_sent"] < size / 20
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

_SWITCHES = ("status", "fail_first", "drop_from", "drop_after", "not_found", "ignore_range")


class RemoteServer:
    """Serve ``root`` from a child process on ``http://127.0.0.1:<port>/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> RemoteServer:
        tests_dir = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.remote_server", str(self.root)],
            cwd=tests_dir, stdout=subprocess.PIPE, text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline().strip())
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def __enter__(self) -> RemoteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _control(self, path: str) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        """Requests answered and body bytes sent since the start (or the last reset)."""
        return self._control("__stats__")

    def set(self, reset: bool = False, **switches: object) -> None:
        """Set :class:`~helpers.http_server.FileServer` switches (None clears one)."""
        query = {k: ("none" if v is None else str(v)) for k, v in switches.items()}
        if reset:
            query["reset"] = "1"
        self._control("__set__?" + urllib.parse.urlencode(query))


def _serve(root: str) -> None:
    from helpers.http_server import FileServer, _Handler

    server = FileServer(root)

    class Handler(_Handler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            if parts.path == "/__stats__":
                with server._lock:
                    rows = list(server.requests)
                self._json({"requests": len(rows), "bytes_sent": sum(r.bytes_sent for r in rows),
                            "statuses": [r.status for r in rows],
                            "ranges": [r.range for r in rows]})
            elif parts.path == "/__set__":
                for key, value in urllib.parse.parse_qsl(parts.query):
                    if key == "reset":
                        with server._lock:
                            server.requests.clear()
                    elif key in _SWITCHES:
                        parsed: object = None if value == "none" else value == "True" if value in ("True", "False") \
                            else int(value)
                        setattr(server, key, parsed)
                self._json({"ok": True})
            else:
                super().do_GET()

        def _json(self, data: dict) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server._httpd.RequestHandlerClass = Handler
    server._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]  # resets are tested
    server.start()
    print(server.port, flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    _serve(sys.argv[1])
