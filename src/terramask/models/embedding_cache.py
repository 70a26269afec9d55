"""Persistent on-disk cache of image embeddings, shared by the CLI, the Python API and servers.

An entry is keyed by ``model name + weights id + image content``
(:mod:`terramask.models.embedding_keys`) and stored as one file
``<cache>/embeddings/<key>.emb`` (:mod:`terramask.models.embedding_format`: magic, JSON
header, 64-byte aligned raw arrays, BLAKE2b checksum), so a cached embedding decodes to
bit-identical masks.

Entries are written to a temporary file and renamed (:mod:`terramask.io.atomic`). A read
checks magic, header, key, payload length and checksum; anything wrong (truncated,
corrupt, another key, older format) is deleted and reported as a miss, never used. The
cache is capped (env ``TERRAMASK_EMBEDDING_CACHE_MB``, default 2048 MB, ``0`` disables
it); when a write goes over the cap the least recently *used* entries are removed (a hit
refreshes the file's mtime, which is the access clock: atime is unreliable on
``noatime``/``relatime`` mounts).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import ModelError, OutputError
from terramask.core.image import GeoImage
from terramask.io.atomic import atomic_output
from terramask.models.base import Backend, Embedding, as_rgb8
from terramask.models.embedding_format import DECODE_ERRORS, aligned_buffer, decode_entry, encode_entry
from terramask.models.embedding_keys import (
    DEFAULT_CAP_MB,
    cap_bytes_from_env,
    default_embedding_dir,
    entry_key,
    image_hash,
    weights_id,
)

__all__ = [
    "DEFAULT_CAP_MB",
    "CacheStats",
    "CachedBackend",
    "EmbeddingCache",
    "cap_bytes_from_env",
    "default_embedding_dir",
    "entry_key",
    "image_hash",
    "weights_id",
]

log = logging.getLogger(__name__)

SUFFIX = ".emb"


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

    def put(self, key: str, embedding: Embedding, meta: dict[str, Any] | None = None) -> Path | None:
        """Store ``embedding`` under ``key``; returns the file, or ``None`` when disabled or
        when the entry alone is larger than the cap. Raises :class:`OutputError` when the
        file cannot be written, :class:`InputError` for features that cannot be stored."""
        if not self.enabled:
            return None
        pieces = encode_entry(key, embedding, meta)
        total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
        if total > self.cap_bytes:
            log.warning(
                "embedding of %.1f MB exceeds the cache cap of %.1f MB; not cached", total / 2**20, self.cap_bytes / 2**20
            )
            return None
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, durable=False) as tmp, open(tmp, "wb") as f:
                for piece in pieces:
                    f.write(piece)
        except OSError as exc:  # OutputError is an OSError too
            raise OutputError(f"{path}: cannot write embedding cache entry: {exc}") from exc
        self.evict(keep=path)
        return path

    def get(self, key: str, device: Any = None) -> Embedding | None:
        """The cached embedding for ``key`` or ``None``. Torch leaves come back as tensors
        on ``device`` (default: the device they were stored from). A bad entry is removed."""
        if not self.enabled:
            return None
        path = self.path_for(key)
        buf = self._read(path)
        if buf is None:
            self.stats.misses += 1
            return None
        try:
            embedding = decode_entry(buf, key, device)
        except DECODE_ERRORS as exc:
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
        return embedding

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        """The whole file as an aligned ``uint8`` array, ``None`` when missing or unreadable."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                buf = aligned_buffer(size)
                n = f.readinto(buf.data)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read embedding cache entry %s: %s", path, exc)
            return None
        return buf[:n]

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

    def __init__(self, backend: Backend, cache: EmbeddingCache | None = None, weights_id: str | None = None) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.cache = cache if cache is not None else EmbeddingCache()
        self._weights_id = weights_id

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
        if item in ("backend", "cache", "_weights_id", "name"):
            raise AttributeError(item)
        return getattr(self.backend, item)

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, cache={str(self.cache.directory)!r})"
