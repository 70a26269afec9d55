"""Where the embedding cache lives, how big it may grow, and how its entries are keyed.

A key is ``sha256(format version, model name, weights id, image hash)``:

- the *weights id* is the SHA-256 of the checkpoint file, computed once per file and
  memoised in this process and on disk by ``realpath + size + mtime_ns`` (a 2.5 GB
  checkpoint is hashed once, not at every start), or an id the backend states itself;
- the *image hash* is a BLAKE2b digest of the ``(H, W, 3)`` uint8 array the backend
  receives, with its shape. That array already encodes the scene, the window, the band
  choice and the stretch, so any change of those gives another key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from terramask.core.errors import InputError, ModelError, OutputError
from terramask.io.atomic import write_bytes
from terramask.models.cachedir import cache_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CAP_MB = 2048
_HASH_CHUNK = 1 << 22


# -- locations -----------------------------------------------------------------


def default_embedding_dir() -> Path:
    """``<terramask cache>/embeddings`` (``TERRAMASK_CACHE`` or the user cache dir)."""
    return cache_dir(create=False) / "embeddings"


def cap_bytes_from_env() -> int:
    """The cache size cap in bytes from ``TERRAMASK_EMBEDDING_CACHE_MB`` (default 2048).

    Raises :class:`InputError` for a value that is not a number of megabytes >= 0.
    """
    raw = os.environ.get("TERRAMASK_EMBEDDING_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_CAP_MB * 1024 * 1024
    try:
        mb = float(raw)
    except ValueError:
        raise InputError(f"TERRAMASK_EMBEDDING_CACHE_MB must be a number of megabytes, got {raw!r}") from None
    if mb < 0:
        raise InputError(f"TERRAMASK_EMBEDDING_CACHE_MB must be >= 0, got {raw!r}")
    return int(mb * 1024 * 1024)


# -- hashing -----------------------------------------------------------------------


def image_hash(rgb8: np.ndarray) -> str:
    """BLAKE2b-256 hex digest of an ``(H, W, 3)`` uint8 array's dtype, shape and bytes."""
    arr = np.ascontiguousarray(rgb8)
    h = hashlib.blake2b(digest_size=32)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.data.cast("B"))
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_WEIGHTS_MEMO: dict[tuple[str, int, int], str] = {}
_WEIGHTS_LOCK = threading.Lock()


def weights_id(path: str | os.PathLike[str], memo_dir: Path | None = None) -> str:
    """SHA-256 hex of a checkpoint file, memoised by ``(realpath, size, mtime_ns)``.

    The memo lives in this process and on disk under ``memo_dir`` (default
    ``<cache>/embeddings/weights``), so each file is hashed once, not at every start.
    A changed file (size or mtime) is hashed again. Raises :class:`ModelError` for a
    missing file.
    """
    p = Path(path)
    try:
        st = p.stat()
        real = str(p.resolve())
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint not found, cannot identify its weights") from None
    memo_key = (real, st.st_size, st.st_mtime_ns)
    with _WEIGHTS_LOCK:
        if memo_key in _WEIGHTS_MEMO:
            return _WEIGHTS_MEMO[memo_key]
    memo_dir = memo_dir if memo_dir is not None else default_embedding_dir() / "weights"
    memo_file = memo_dir / (hashlib.sha1(real.encode()).hexdigest() + ".json")
    digest = _read_memo(memo_file, real, st)
    if digest is None:
        t0 = time.perf_counter()
        digest = _file_sha256(p)
        log.info("hashed %s in %.1f s (sha256 %s)", p, time.perf_counter() - t0, digest[:12])
        _write_memo(memo_file, {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    with _WEIGHTS_LOCK:
        _WEIGHTS_MEMO[memo_key] = digest
    return digest


def _read_memo(memo_file: Path, real: str, st: os.stat_result) -> str | None:
    """The memoised digest when ``memo_file`` describes this very file, else ``None``."""
    try:
        stored = json.loads(memo_file.read_text())
        if stored.get("path") == real and stored.get("size") == st.st_size and stored.get("mtime_ns") == st.st_mtime_ns:
            return str(stored["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _write_memo(memo_file: Path, record: dict[str, object]) -> None:
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(memo_file, json.dumps(record).encode())
    except (OSError, OutputError) as exc:  # a read-only cache only costs a re-hash next time
        log.debug("could not memoise weights hash in %s: %s", memo_file, exc)


def entry_key(model: str, weights: str, img_hash: str) -> str:
    """The cache key (SHA-256 hex) of one embedding."""
    text = f"terramask-embedding/{FORMAT_VERSION}\0{model}\0{weights}\0{img_hash}"
    return hashlib.sha256(text.encode()).hexdigest()
