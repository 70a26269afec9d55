"""A durable journal of finished batch work: append-only JSON lines.

Each finished item is one line ``{"key": ..., "status": "done" | "failed", ...}``,
written with a single ``write`` on an ``O_APPEND`` descriptor and ``fsync``'ed before
:meth:`Journal.record` returns, so once a result is reported it survives ``kill -9`` or a
power cut. A crash can at worst leave a torn last line (no newline): opening the journal
cuts it off, so the next record starts on a fresh line. For the same key the last line
wins.

An exclusive ``flock`` on the file keeps two batches from writing into the same output
folder at once; the kernel releases it when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from terramask.core.errors import OutputError
from terramask.io.atomic import json_default

log = logging.getLogger(__name__)

VERSION = 1


class Journal:
    """``with Journal(path) as j: j.done(key); j.record(key, "done", **fields)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._entries: dict[str, dict] = {}
        self.torn = 0

    # -- lifetime ----------------------------------------------------------------------
    def open(self) -> "Journal":
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot open the batch journal {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"another terramask batch is writing to {self.path.parent} (its journal is locked); "
                "wait for it or use another --out folder"
            ) from None
        self._fd = fd
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Journal":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------
    def _load(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line from a crash: drop it
            self.torn += 1
            log.warning("%s: dropping an incomplete last line left by an interrupted run", self.path)
            assert self._fd is not None  # opened by the caller
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            data = data[:end]
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                self.torn += 1
                log.warning("%s: line %d is not valid JSON; ignored", self.path, number)
                continue
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                self._entries[entry["key"]] = entry

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def done(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.get("status") == "done"

    def entries(self) -> Iterator[dict]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    # -- writing -----------------------------------------------------------------------
    def record(self, key: str, status: str, **fields: Any) -> dict:
        """Append one entry and make it durable; returns it."""
        if self._fd is None:
            raise OutputError(f"the batch journal {self.path} is not open")
        entry = {"v": VERSION, "key": key, "status": status, **fields}
        line = (json.dumps(entry, default=json_default, allow_nan=False) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write the batch journal {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        self._entries[key] = entry
        return entry
