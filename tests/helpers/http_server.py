"""A tiny threaded HTTP file server on 127.0.0.1 for download tests.

Serves the files of one directory with HTTP ``Range`` support (``bytes=N-`` and
``bytes=N-M``) and a few switches to simulate what real networks do:

- ``drop_after = N``: send the headers (full ``Content-Length``) and only ``N`` body
  bytes, then close the connection (a truncated transfer);
- ``ignore_range = True``: answer every request with ``200`` and the whole file, as
  servers without range support do;
- ``not_found = True``: answer ``404`` to everything;
- ``status = N``: answer ``N`` (e.g. 403, 503) with an empty body to everything;
- ``fail_first = N``: answer ``503`` to the next ``N`` requests, then normally (a
  transient error that a retry gets past);
- ``drop_from = N``: a range request starting at byte ``N`` or later sends half of its
  body and closes the connection (a connection reset in the middle of a read, after the
  header was read).

Every request is recorded in ``requests`` as a :class:`Served` row (path, Range header,
status, body bytes sent), so tests can assert that a resumed download fetched fewer
bytes than the file holds.

Usage::

    with FileServer(directory) as server:
        url = server.url("file.bin")
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 16


@dataclass
class Served:
    """One answered request; ``bytes_sent`` is the body length the server sent (or
    started sending, when the client hung up first)."""

    path: str
    range: str | None
    status: int
    bytes_sent: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        range_header = self.headers.get("Range")
        name = self.path.split("?", 1)[0].lstrip("/")
        target = (owner.root / name).resolve()
        forced = owner._forced_status()
        if forced is not None:
            self._empty(forced, range_header)
            return
        if owner.not_found or owner.root not in target.parents or not target.is_file():
            self._empty(404, range_header)
            return
        data = target.read_bytes()
        total = len(data)
        start, end, status = 0, total - 1, 200
        if range_header and not owner.ignore_range:
            match = _RANGE.match(range_header.strip())
            if match is None:
                self._empty(400, range_header)
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
            if start >= total or start > end:
                owner._record(Served(name, range_header, 416, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if owner.ignore_range else "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        if not send_body:
            owner._record(Served(name, range_header, status, 0))
            self.end_headers()
            return
        self.end_headers()
        dropping = owner.drop_after is not None and owner.drop_after < len(body)
        if dropping:
            body = body[: owner.drop_after]
        elif owner.drop_from is not None and status == 206 and start >= owner.drop_from and len(body) > 1:
            dropping, body = True, body[: len(body) // 2]
        # Recorded before sending, so a client that has read everything sees the row; a
        # client that hangs up early (GDAL's GET for headers only) is counted for what was
        # written before it left, in 64 KiB chunks.
        row = Served(name, range_header, status, min(len(body), _CHUNK))
        owner._record(row)
        try:
            for start_at in range(0, len(body), _CHUNK):
                if start_at:
                    row.bytes_sent = min(len(body), start_at + _CHUNK)
                self.wfile.write(body[start_at : start_at + _CHUNK])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True
            return
        if dropping:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _empty(self, status: int, range_header: str | None) -> None:
        self.server.owner._record(Served(self.path.lstrip("/"), range_header, status, 0))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FileServer


class FileServer:
    """Serve ``root`` on ``http://127.0.0.1:<free port>/`` from a background thread."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.drop_after: int | None = None
        self.ignore_range = False
        self.not_found = False
        self.status: int | None = None
        self.fail_first = 0
        self.drop_from: int | None = None
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        """URL of ``root / name``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent so far, all requests together."""
        with self._lock:
            return sum(r.bytes_sent for r in self.requests)

    def _forced_status(self) -> int | None:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503
        return self.status

    def _record(self, row: Served) -> None:
        with self._lock:
            self.requests.append(row)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A local port with nothing listening on it (connection refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
