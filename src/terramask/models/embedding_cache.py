"""Persistent on-disk cache of image embeddings, shared by the CLI, the Python API and servers.

An entry is keyed by ``model name + weights id + image content``:

- the *weights id* is the SHA-256 of the checkpoint file (computed once per file and
  memoised on disk by ``realpath + size + mtime``, so a 2.5 GB checkpoint is hashed once,
  not at every start), or an id the backend states itself (``weights_id`` attribute);
- the *image hash* is a BLAKE2b digest of the ``(H, W, 3)`` uint8 array the backend
  receives, with its shape. That array already encodes the scene, the window, the band
  choice and the stretch, so any change of those gives another key.

Each entry is one file ``<cache>/embeddings/<key>.emb``: an 8-byte magic, a JSON header
(key, model, weights id, image hash, sizes, the features' tree structure, per-array
dtype/shape/offset and a BLAKE2b checksum of the payload) and the raw arrays, 64-byte
aligned. Arrays are stored exactly (float32 stays float32, bfloat16 tensors are stored
as float32 and cast back), so a cached embedding decodes to bit-identical masks.

Entries are written to a temporary file and renamed. A read checks magic, header, key,
payload length and checksum; anything wrong (truncated, corrupt, another key, older
format) is deleted and reported as a miss, never used. The cache is capped (env
``TERRAMASK_EMBEDDING_CACHE_MB``, default 2048 MB, ``0`` disables it); when a write goes
over the cap the least recently *used* entries are removed (a hit refreshes the file's
mtime, which is the access clock: atime is unreliable on ``noatime``/``relatime`` mounts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import InputError, ModelError, OutputError
from terramask.core.image import GeoImage
from terramask.models.base import Embedding, as_rgb8

log = logging.getLogger(__name__)

MAGIC = b"TMEMB1\n\0"
FORMAT_VERSION = 1
SUFFIX = ".emb"
DEFAULT_CAP_MB = 2048
_ALIGN = 64
_HASH_CHUNK = 1 << 22


# -- locations -----------------------------------------------------------------


def _cache_root() -> Path:
    """terramask's cache directory (``cachedir.cache_dir()`` when available)."""
    try:
        from terramask.models.cachedir import cache_dir  # type: ignore[attr-defined]
    except ImportError:
        env = os.environ.get("TERRAMASK_CACHE")
        if env:
            return Path(env).expanduser()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("terramask"))
    return Path(cache_dir())


def default_embedding_dir() -> Path:
    """``<terramask cache>/embeddings``."""
    return _cache_root() / "embeddings"


def cap_bytes_from_env() -> int:
    """The cache size cap in bytes from ``TERRAMASK_EMBEDDING_CACHE_MB`` (default 2048)."""
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
    """BLAKE2b-256 hex digest of an ``(H, W, 3)`` uint8 array's shape and bytes."""
    arr = np.ascontiguousarray(rgb8)
    h = hashlib.blake2b(digest_size=32)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_WEIGHTS_MEMO: dict[tuple[str, int, int], str] = {}
_WEIGHTS_LOCK = threading.Lock()


def weights_id(path: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """SHA-256 hex of a checkpoint file, memoised by ``(realpath, size, mtime_ns)``.

    The memo lives in this process and on disk under ``memo_dir`` (default
    ``<cache>/embeddings/weights``), so each file is hashed once, not at every start.
    A changed file (size or mtime) is hashed again.
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
    digest = None
    try:
        stored = json.loads(memo_file.read_text())
        if stored.get("path") == real and stored.get("size") == st.st_size and stored.get("mtime_ns") == st.st_mtime_ns:
            digest = str(stored["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if digest is None:
        t0 = time.perf_counter()
        digest = _file_sha256(p)
        log.info("hashed %s in %.1f s (sha256 %s)", p, time.perf_counter() - t0, digest[:12])
        record = {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        try:
            _atomic_write_bytes(memo_file, json.dumps(record).encode())
        except OSError as exc:  # a read-only cache only costs a re-hash next time
            log.debug("could not memoise weights hash in %s: %s", memo_file, exc)
    with _WEIGHTS_LOCK:
        _WEIGHTS_MEMO[memo_key] = digest
    return digest


def entry_key(model: str, weights: str, img_hash: str) -> str:
    """The cache key (hex) of one embedding."""
    text = f"terramask-embedding/{FORMAT_VERSION}\0{model}\0{weights}\0{img_hash}"
    return hashlib.sha256(text.encode()).hexdigest()


# -- (de)serialising feature trees ---------------------------------------------


def _flatten(obj: Any, arrays: list[tuple[np.ndarray, dict]]) -> Any:
    """Tree spec of ``obj`` (dict/list/tuple of arrays, tensors and JSON scalars);
    array leaves are appended to ``arrays`` and referenced by index."""
    if isinstance(obj, np.ndarray):
        arrays.append((obj, {"kind": "numpy"}))
        return {"$array": len(arrays) - 1}
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach") and hasattr(obj, "dtype"):
        import torch

        t = obj.detach()
        meta = {"kind": "torch", "torch_dtype": str(t.dtype).removeprefix("torch."), "device": str(t.device)}
        # numpy has no bfloat16: store it as float32 (exact) and cast back on load
        arr = (t.float() if t.dtype == torch.bfloat16 else t).cpu().contiguous().numpy()
        arrays.append((arr, meta))
        return {"$array": len(arrays) - 1}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise InputError("embedding feature dicts must have string keys to be cached")
        return {"$dict": {k: _flatten(v, arrays) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"$list" if isinstance(obj, list) else "$tuple": [_flatten(v, arrays) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"$value": obj}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return {"$value": obj.item()}
    raise InputError(f"cannot cache embedding features of type {type(obj).__name__}")


def _unflatten(spec: Any, leaves: list[Any]) -> Any:
    if "$array" in spec:
        return leaves[spec["$array"]]
    if "$dict" in spec:
        return {k: _unflatten(v, leaves) for k, v in spec["$dict"].items()}
    if "$list" in spec:
        return [_unflatten(v, leaves) for v in spec["$list"]]
    if "$tuple" in spec:
        return tuple(_unflatten(v, leaves) for v in spec["$tuple"])
    if "$value" in spec:
        return spec["$value"]
    raise ValueError(f"bad tree spec {spec!r}")


def _json_safe(extras: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable part of ``Embedding.extras`` (cache bookkeeping dropped)."""
    out = {}
    for k, v in extras.items():
        # georeference belongs to the image at hand (same pixels may sit elsewhere), and
        # cache bookkeeping to the call
        if k in ("cache", "encoder_seconds", "cache_seconds", "transform", "crs"):
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def _aligned_buffer(size: int) -> np.ndarray:
    """A writable ``uint8`` array of ``size`` bytes starting on a 64-byte boundary.

    Payload arrays sit at 64-byte offsets in the file; reading into an aligned buffer
    puts them on 64-byte addresses like torch's own allocations, so SIMD kernels take the
    same path and a cached embedding decodes bit-identically to a fresh one.
    """
    raw = np.empty(size + _ALIGN, dtype=np.uint8)
    shift = (-raw.ctypes.data) % _ALIGN
    return raw[shift : shift + size]


def _atomic_write_bytes(path: Path, data: bytes | list[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in [data] if isinstance(data, bytes) else data:
                f.write(part)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the cache -------------------------------------------------------------------------


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rejected: int = 0  # corrupt / stale entries removed
    evicted: int = 0


@dataclass
class EmbeddingCache:
    """A directory of embeddings with a size cap and LRU eviction.

    ``directory`` defaults to ``<terramask cache>/embeddings``; ``cap_bytes`` to
    ``TERRAMASK_EMBEDDING_CACHE_MB``. ``cap_bytes == 0`` disables storing (every lookup
    misses). Safe for several processes sharing the directory: writes are atomic and
    eviction tolerates files removed by someone else.
    """

    directory: Path = field(default_factory=default_embedding_dir)
    cap_bytes: int = field(default_factory=cap_bytes_from_env)
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    # ---- write ----
    def put(self, key: str, embedding: Embedding, meta: dict[str, Any] | None = None) -> Path | None:
        """Store ``embedding`` under ``key``; returns the file, or ``None`` when disabled or
        when the entry alone is larger than the cap."""
        if not self.enabled:
            return None
        arrays: list[tuple[np.ndarray, dict]] = []
        tree = _flatten(embedding.features, arrays)
        entries, offset = [], 0
        checksum = hashlib.blake2b(digest_size=32)
        buffers: list[bytes | memoryview] = []
        for arr, info in arrays:
            arr = np.ascontiguousarray(arr)
            if arr.dtype.hasobject:
                raise InputError("cannot cache object arrays in embedding features")
            pad = (-offset) % _ALIGN
            if pad:
                buffers.append(b"\0" * pad)
                checksum.update(b"\0" * pad)
                offset += pad
            view = memoryview(arr).cast("B") if arr.nbytes else memoryview(b"")
            entries.append({**info, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
            buffers.append(view)
            checksum.update(view)
            offset += arr.nbytes
        header = {
            "format": FORMAT_VERSION,
            "key": key,
            "model": embedding.model,
            "image_size": list(embedding.image_size),
            "input_size": list(embedding.input_size),
            "extras": _json_safe(embedding.extras),
            "meta": meta or {},
            "tree": tree,
            "arrays": entries,
            "payload_nbytes": offset,
            "checksum": checksum.hexdigest(),
            "created": time.time(),
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * ((-(len(MAGIC) + 8 + len(head))) % _ALIGN)
        total = len(MAGIC) + 8 + len(head) + offset
        if total > self.cap_bytes:
            log.warning("embedding of %.1f MB exceeds the cache cap of %.1f MB; not cached", total / 2**20, self.cap_bytes / 2**20)
            return None
        path = self.path_for(key)
        try:
            _atomic_write_bytes(path, [MAGIC, struct.pack("<Q", len(head)), head, *buffers])
        except OSError as exc:
            raise OutputError(f"{path}: cannot write embedding cache entry: {exc}") from exc
        self.evict(keep=path)
        return path

    # ---- read ----
    def get(self, key: str, device: Any = None) -> Embedding | None:
        """The cached embedding for ``key`` or ``None``. Torch leaves come back as tensors
        on ``device`` (default: the device they were stored from). A bad entry is removed."""
        if not self.enabled:
            return None
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                buf = _aligned_buffer(size)
                n = f.readinto(memoryview(buf))
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError as exc:
            log.warning("cannot read embedding cache entry %s: %s", path, exc)
            self.stats.misses += 1
            return None
        try:
            header, payload = self._parse(buf, n, key)
        except ValueError as exc:
            log.warning("discarding bad embedding cache entry %s: %s", path, exc)
            self.stats.rejected += 1
            self.stats.misses += 1
            self._remove(path)
            return None
        try:
            leaves = [self._leaf(payload, info, device) for info in header["arrays"]]
            features = _unflatten(header["tree"], leaves)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            log.warning("discarding bad embedding cache entry %s: %s", path, exc)
            self.stats.rejected += 1
            self.stats.misses += 1
            self._remove(path)
            return None
        try:
            os.utime(path)  # LRU clock
        except OSError:
            pass
        self.stats.hits += 1
        return Embedding(
            model=header["model"],
            features=features,
            image_size=tuple(header["image_size"]),
            input_size=tuple(header["input_size"]),
            key=key,
            extras=dict(header.get("extras", {})),
        )

    @staticmethod
    def _leaf(payload: np.ndarray, info: dict, device: Any) -> Any:
        start = int(info["offset"])
        arr = payload[start : start + int(info["nbytes"])].view(np.dtype(info["dtype"])).reshape(info["shape"])
        if info.get("kind") != "torch":
            return arr
        import torch

        dtype = getattr(torch, info["torch_dtype"])
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown torch dtype {info['torch_dtype']!r}")
        target = device if device is not None else info.get("device", "cpu")
        return torch.from_numpy(arr).to(device=target, dtype=dtype)

    @staticmethod
    def _parse(buf: np.ndarray, n: int, key: str) -> tuple[dict, np.ndarray]:
        if n != len(buf):
            raise ValueError("short read")
        if len(buf) < len(MAGIC) + 8 or bytes(buf[: len(MAGIC)]) != MAGIC:
            raise ValueError("not a terramask embedding file (bad magic)")
        (hlen,) = struct.unpack_from("<Q", bytes(buf[len(MAGIC) : len(MAGIC) + 8]))
        start = len(MAGIC) + 8
        if start + hlen > len(buf):
            raise ValueError("truncated header")
        try:
            header = json.loads(bytes(buf[start : start + hlen]))
        except ValueError:
            raise ValueError("unreadable header") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {header.get('format') if isinstance(header, dict) else '?'} != {FORMAT_VERSION}")
        if header.get("key") != key:
            raise ValueError("entry holds another key (stale)")
        payload = buf[start + hlen :]
        if len(payload) != header["payload_nbytes"]:
            raise ValueError(f"payload is {len(payload)} bytes, header says {header['payload_nbytes']} (truncated)")
        if hashlib.blake2b(memoryview(payload), digest_size=32).hexdigest() != header["checksum"]:
            raise ValueError("checksum mismatch (corrupt)")
        for info in header["arrays"]:
            if info["offset"] + info["nbytes"] > len(payload):
                raise ValueError("array outside payload")
        return header, payload

    # ---- housekeeping ----
    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def entries(self) -> list[tuple[Path, int, float]]:
        """``(path, bytes, last_used)`` of every entry, least recently used first."""
        out = []
        try:
            it = os.scandir(self.directory)
        except FileNotFoundError:
            return []
        with it:
            for e in it:
                if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    out.append((Path(e.path), st.st_size, st.st_mtime))
        out.sort(key=lambda t: t[2])
        return out

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the total is within the cap.
        Returns the number removed. ``keep`` (the entry just written) goes last."""
        entries = self.entries()
        total = sum(s for _, s, _ in entries)
        removed = 0
        if total <= self.cap_bytes:
            return 0
        ordered = [e for e in entries if e[0] != keep] + [e for e in entries if e[0] == keep]
        for path, size, _ in ordered:
            if total <= self.cap_bytes:
                break
            self._remove(path)
            total -= size
            removed += 1
        self.stats.evicted += removed
        if removed:
            log.info("evicted %d embedding(s) from %s to stay under %.0f MB", removed, self.directory, self.cap_bytes / 2**20)
        return removed

    def clear(self) -> int:
        """Remove every entry; returns how many."""
        entries = self.entries()
        for path, _, _ in entries:
            self._remove(path)
        return len(entries)


# -- the backend wrapper -----------------------------------------------------------------


class CachedBackend:
    """Wraps any :class:`~terramask.models.base.Backend` so ``set_image`` reads and fills
    an :class:`EmbeddingCache`. Everything else (``predict``, ``decode_points``,
    ``upscale_logits``, ``mask_threshold`` …) is forwarded to the wrapped backend.

    The returned embedding's ``extras`` say what happened: ``cache`` = ``"hit"`` or
    ``"miss"``, ``encoder_seconds`` (0.0 on a hit) and ``cache_seconds`` (time spent
    hashing, reading or writing). ``key`` is the cache key.

    The weights are identified by ``weights_id`` if given, else the backend's own
    ``weights_id`` attribute, else the SHA-256 of its ``checkpoint`` (or ``source``)
    file, memoised.
    """

    def __init__(self, backend: Any, cache: EmbeddingCache | None = None, weights_id: str | None = None) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else EmbeddingCache()
        self._weights_id = weights_id

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            own = getattr(self.backend, "weights_id", None)
            if isinstance(own, str) and own:
                self._weights_id = own
            else:
                ckpt = getattr(self.backend, "checkpoint", None) or getattr(self.backend, "source", None)
                if ckpt is None or not Path(ckpt).is_file():
                    raise ModelError(
                        f"backend {self.name!r} has neither a weights_id nor a checkpoint path; "
                        "cannot key its embeddings"
                    )
                self._weights_id = weights_id(ckpt)
        return self._weights_id

    def key_for(self, rgb8: np.ndarray) -> str:
        return entry_key(self.name, self.weights_id, image_hash(rgb8))

    def cached(self, image: GeoImage | np.ndarray) -> bool:
        """Whether a valid-looking entry for ``image`` exists (no checksum read)."""
        return self.cache.enabled and self.cache.path_for(self.key_for(as_rgb8(image))).is_file()

    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Embedding of ``image`` (see :class:`~terramask.models.base.Backend`), from the
        cache when present, else computed by the wrapped backend and stored."""
        rgb = as_rgb8(image)
        t0 = time.perf_counter()
        img_hash = image_hash(rgb)
        key = entry_key(self.name, self.weights_id, img_hash)
        cached = self.cache.get(key, device=getattr(self.backend, "device", None))
        if cached is not None:
            cached.extras.update(cache="hit", encoder_seconds=0.0, cache_seconds=time.perf_counter() - t0)
            return self._georeference(cached, image)
        hash_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        emb = self.backend.set_image(rgb)
        enc_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        try:
            self.cache.put(key, emb, meta={"weights": self.weights_id, "image_hash": img_hash})
        except OutputError as exc:  # a full disk must not stop segmentation
            log.warning("%s", exc)
        emb.key = key
        emb.extras.update(cache="miss", encoder_seconds=enc_s, cache_seconds=hash_s + time.perf_counter() - t2)
        return self._georeference(emb, image)

    @staticmethod
    def _georeference(emb: Embedding, image: GeoImage | np.ndarray) -> Embedding:
        """The transform/CRS of the image given now (backends put them in ``extras`` so
        mask sets come back georeferenced; the cache never stores them)."""
        if isinstance(image, GeoImage):
            emb.extras["transform"] = image.transform
            emb.extras["crs"] = image.crs
        else:
            emb.extras.pop("transform", None)
            emb.extras.pop("crs", None)
        return emb

    def __getattr__(self, item: str) -> Any:
        # only called for attributes not found on the wrapper itself
        if item in ("backend", "cache", "_weights_id"):
            raise AttributeError(item)
        return getattr(self.backend, item)

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, cache={str(self.cache.directory)!r})"
