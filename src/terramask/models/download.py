"""Download checkpoints into the cache: streamed, resumable, verified, atomic.

:func:`download` streams a URL with ``urllib`` into ``<dest>.part``, continuing an
existing ``.part`` with an HTTP ``Range`` request (and starting over when the server
ignores it), checks size and SHA-256, and only then renames the file to ``dest``. So
``dest`` either does not exist or is complete and verified:

- network failure, HTTP error → :class:`DownloadError` with a hint on where to put the
  file by hand; a partial ``.part`` is kept for the next attempt;
- transfer ended early → :class:`DownloadError`, ``.part`` kept (run again to resume);
- wrong checksum or size → :class:`ChecksumError`, ``.part`` deleted.

:func:`ensure_checkpoint` turns a :class:`ModelSpec` (and an optional user-given path)
into a verified local file. A full SHA-256 of a multi-GB file takes seconds, so a
verified file gets a ``<file>.sha256-ok`` sidecar recording hash, size and mtime; later
calls only ``stat`` the file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from terramask.core.errors import (
    ChecksumError,
    DownloadError,
    InputError,
    OutputError,
    WeightsNotFoundError,
)
from terramask.models.cachedir import models_dir
from terramask.models.registry import ModelSpec

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "terramask-downloader (+https://pypi.org/project/terramask/)"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def checkpoint_path(spec: ModelSpec) -> Path:
    """Where ``spec``'s checkpoint lives in the cache (the file need not exist)."""
    if spec.filename is None:
        raise InputError(f"model {spec.name!r} is weight-free; it has no checkpoint file")
    return models_dir(create=False) / spec.filename


def part_path(dest: Path) -> Path:
    """The temporary file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + ".part")


def is_cached(spec: ModelSpec) -> bool:
    """True when ``spec``'s checkpoint is in the cache with the expected size (a cheap
    ``stat``; the hash is verified when the checkpoint is loaded)."""
    if spec.filename is None:
        return False
    if spec.is_snapshot:
        from terramask.models.snapshot import is_snapshot_cached

        return is_snapshot_cached(spec)
    path = checkpoint_path(spec)
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return path.is_file() and (spec.size_bytes is None or size == spec.size_bytes)


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        _hash_into(fh, digest, chunk)
    return digest.hexdigest()


def _hash_into(fh: BinaryIO, digest: "hashlib._Hash", chunk: int = CHUNK) -> None:
    while block := fh.read(chunk):
        digest.update(block)


# --------------------------------------------------------------------- verified sidecar


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256-ok")


def _mark_verified(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now) has hash ``sha256``; best effort."""
    st = path.stat()
    record = {"sha256": sha256.lower(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, side)
    except OSError as exc:  # a read-only cache still works, it just rehashes next time
        logger.debug("cannot write %s: %s", side, exc)


def _is_marked_verified(path: Path, sha256: str) -> bool:
    try:
        record = json.loads(_sidecar(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == sha256.lower()
        and record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
    )


def _forget_verified(path: Path) -> None:
    _sidecar(path).unlink(missing_ok=True)


def verify_checkpoint(path: Path, sha256: str | None = None, size: int | None = None) -> None:
    """Check ``path``'s size and SHA-256 (hashing only once per file version).

    Raises :class:`ChecksumError` naming the file and what differs.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path} has {actual_size} bytes, expected {size}")
    if sha256 is None or _is_marked_verified(path, sha256):
        return
    logger.info("verifying SHA-256 of %s", path)
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ChecksumError(f"{path} has SHA-256 {actual}, expected {sha256.lower()}")
    _mark_verified(path, actual)


# ----------------------------------------------------------------------------- download


def _hint(url: str, dest: Path, name: str | None) -> str:
    where = f"`terramask models path {name}` shows this location" if name else "the expected location"
    return (
        f"without network access, fetch {url} elsewhere and put it at {dest} ({where}), "
        f"or pass --checkpoint PATH"
    )


class HTTPStatusError(DownloadError):
    """The server answered with an HTTP error ``status`` (404, 401, 403 …)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _open(url: str, offset: int, timeout: float, extra: dict[str, str] | None = None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(extra or {})}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch_json(url: str, headers: dict[str, str] | None = None, *, timeout: float = TIMEOUT_S) -> object:
    """The JSON document at ``url`` (a small metadata answer, e.g. the Hugging Face model
    API). An HTTP error answer raises :class:`HTTPStatusError`; an unreachable server or
    an answer that is not JSON raises :class:`DownloadError` naming ``url``."""
    try:
        with _open(url, 0, timeout, {"Accept": "application/json", **(headers or {})}) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise HTTPStatusError(f"{url} answered HTTP {exc.code} {exc.reason}", exc.code) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"cannot read {url}: {exc}") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DownloadError(f"{url} did not answer JSON ({exc})") from exc


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    *,
    name: str | None = None,
    timeout: float = TIMEOUT_S,
    headers: dict[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest``.

    ``sha256`` (hex) and ``size`` (bytes), when given, are checked before the rename.
    ``progress`` shows a tqdm bar on stderr when stderr is a terminal. ``name`` (a
    registry name) makes error messages name the ``terramask models path`` command.
    ``headers`` are sent with every request (e.g. a Hugging Face token). An HTTP error
    answer raises :class:`HTTPStatusError` (a :class:`DownloadError`) carrying the status.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
    part = part_path(dest)
    hint = _hint(url, dest, name)

    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        logger.info("discarding %s: larger than the expected %d bytes", part, size)
        part.unlink()
        offset = 0
    if size is not None and offset == size and offset > 0:
        # A previous run got every byte but stopped before the rename.
        if sha256 is None or sha256_file(part) == sha256.lower():
            return _finish(part, dest, sha256)
        part.unlink()
        offset = 0

    response = _request(url, offset, timeout, hint, part, headers)
    if response is None:  # 416: our .part does not fit the server's file; start over
        part.unlink(missing_ok=True)
        offset = 0
        response = _request(url, 0, timeout, hint, part, headers)
        if response is None:  # only a Range request can get 416; this one had none
            raise DownloadError(f"cannot download {url}: HTTP 416 without a Range request; {hint}")
    with response:
        status = response.status
        total: int | None = None
        if offset and status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != offset:
                raise DownloadError(
                    f"server sent an unexpected range for {url} "
                    f"({response.headers.get('Content-Range')!r}, asked from byte {offset}); "
                    f"delete {part} and try again"
                )
            total = int(match.group(3)) if match.group(3) != "*" else None
        else:
            if offset:
                logger.info("server ignored the Range request for %s; downloading from the start", url)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and size is not None and total != size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} has {total} bytes, expected {size}: not the expected file")
        expected = total if total is not None else size

        digest = hashlib.sha256()
        mode = "ab" if offset else "wb"
        if offset:
            with open(part, "rb") as fh:
                _hash_into(fh, digest)
        received = offset
        bar = _progress_bar(progress, expected, offset, name or dest.name)
        try:
            try:
                out = open(part, mode)
            except OSError as exc:
                raise OutputError(f"cannot write {part}: {exc.strerror or exc}") from exc
            with out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise DownloadError(
                            f"download of {url} interrupted after {received} of {expected or '?'} bytes ({exc}); "
                            f"run the same command again to resume"
                        ) from exc
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise OutputError(f"cannot write {part}: {exc.strerror or exc}") from exc
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()

    if expected is not None and received < expected:
        raise DownloadError(
            f"download of {url} ended after {received} of {expected} bytes; run the same command again to resume"
        )
    if size is not None and received != size:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url} gave {received} bytes, expected {size}")
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url} has SHA-256 {actual}, expected {sha256.lower()}; nothing was saved")
    return _finish(part, dest, actual if sha256 is not None else None)


def _request(
    url: str, offset: int, timeout: float, hint: str, part: Path, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse | None:
    """Open ``url`` from byte ``offset``; ``None`` for 416 (range not satisfiable)."""
    try:
        return _open(url, offset, timeout, headers)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            logger.info("server refused to resume from byte %d; discarding %s", offset, part)
            return None
        raise HTTPStatusError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {hint}", exc.code) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot download {url}: {exc.reason}; {hint}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"cannot download {url}: {exc}; {hint}") from exc


def _finish(part: Path, dest: Path, sha256: str | None) -> Path:
    _forget_verified(dest)
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise OutputError(f"cannot move {part} to {dest}: {exc.strerror or exc}") from exc
    if sha256 is not None:
        _mark_verified(dest, sha256)
    logger.info("saved %s", dest)
    return dest


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: bool, total: int | None, initial: int, desc: str):
    if not (progress and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=True)


# -------------------------------------------------------------------- ensure_checkpoint


def ensure_checkpoint(
    spec: ModelSpec,
    checkpoint: str | os.PathLike[str] | None = None,
    download_missing: bool = False,
    *,
    url: str | None = None,
    progress: bool = True,
) -> Path:
    """A local checkpoint file for ``spec``.

    - ``checkpoint`` given: that file (it must exist; it is not checked against the
      registry hash, so fine-tuned weights work);
    - else the cached file, size-checked and SHA-256-verified (once per file version);
    - else, when ``download_missing``, downloaded from ``url`` or ``spec.url``;
    - else :class:`WeightsNotFoundError` naming ``terramask models download NAME``.

    A damaged cached file raises :class:`ChecksumError`, or is replaced when
    ``download_missing``. A Hugging Face snapshot spec (``spec.is_snapshot``) gives its
    directory (:func:`terramask.models.snapshot.ensure_snapshot`).
    """
    if spec.is_snapshot:
        from terramask.models.snapshot import ensure_snapshot

        return ensure_snapshot(spec, checkpoint, download_missing, progress=progress)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"checkpoint {path} does not exist or is not a file")
        return path
    if not spec.needs_weights:
        raise InputError(f"model {spec.name!r} is weight-free; it has no checkpoint file")
    path = checkpoint_path(spec)
    if path.is_file():
        try:
            verify_checkpoint(path, spec.sha256, spec.size_bytes)
            return path
        except ChecksumError as exc:
            if not download_missing:
                raise ChecksumError(
                    f"cached checkpoint of {spec.name} is damaged ({exc}); "
                    f"replace it with `terramask models download {spec.name} --force`"
                ) from exc
            logger.warning("cached checkpoint of %s is damaged (%s); downloading it again", spec.name, exc)
    if not download_missing:
        raise WeightsNotFoundError(
            f"weights for {spec.name} not found at {path}: run `terramask models download {spec.name}` "
            f"(or pass --checkpoint PATH)"
        )
    source = url or spec.url
    if source is None:
        raise WeightsNotFoundError(f"model {spec.name} has no download URL; pass --checkpoint PATH")
    return download(source, path, spec.sha256, spec.size_bytes, progress, name=spec.name)

