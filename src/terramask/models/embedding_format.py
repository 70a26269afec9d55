"""The embedding cache's file format: one :class:`Embedding` <-> one ``.emb`` file.

Layout: an 8-byte magic, the header length (``<Q``), a JSON header (key, model, image
and input sizes, JSON-safe extras, the features' tree structure, per-array
dtype/shape/offset and a BLAKE2b-256 checksum of the payload), then the raw arrays,
each at a 64-byte aligned offset. Arrays are stored exactly (float32 stays float32;
bfloat16 tensors are stored as float32 and cast back), so a cached embedding decodes to
bit-identical masks. Torch is imported only when a tensor is met.

:func:`decode_entry` raises ``ValueError`` (or ``TypeError``/``KeyError``/``IndexError``,
see :data:`DECODE_ERRORS`) for anything wrong: bad magic, truncated header or payload,
another key, another format version, checksum mismatch.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Any

import numpy as np

from terramask.core.errors import InputError
from terramask.models.base import Embedding
from terramask.models.embedding_keys import FORMAT_VERSION

MAGIC = b"TMEMB1\n\0"
ALIGN = 64
_PREFIX = len(MAGIC) + 8
# what a damaged or foreign entry can raise while it is decoded
DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)

Buffers = list[bytes | memoryview]


# -- feature trees ---------------------------------------------------------------


def _flatten(obj: Any, arrays: list[tuple[np.ndarray, dict[str, Any]]]) -> Any:
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


# -- encode --------------------------------------------------------------------------


def encode_entry(key: str, embedding: Embedding, meta: dict[str, Any] | None = None) -> Buffers:
    """The byte pieces of one entry file, in order (their total length is the file size).

    Raises :class:`InputError` for features that cannot be stored (object arrays,
    non-string dict keys, other types).
    """
    arrays: list[tuple[np.ndarray, dict[str, Any]]] = []
    tree = _flatten(embedding.features, arrays)
    entries, offset = [], 0
    checksum = hashlib.blake2b(digest_size=32)
    buffers: Buffers = []
    for arr, info in arrays:
        arr = np.ascontiguousarray(arr)
        if arr.dtype.hasobject:
            raise InputError("cannot cache object arrays in embedding features")
        pad = (-offset) % ALIGN
        if pad:
            buffers.append(b"\0" * pad)
            checksum.update(b"\0" * pad)
            offset += pad
        view = arr.data.cast("B") if arr.nbytes else memoryview(b"")
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
    head += b" " * ((-(_PREFIX + len(head))) % ALIGN)
    return [MAGIC, struct.pack("<Q", len(head)), head, *buffers]


# -- decode --------------------------------------------------------------------------


def aligned_buffer(size: int) -> np.ndarray:
    """A writable ``uint8`` array of ``size`` bytes starting on a 64-byte boundary.

    Payload arrays sit at 64-byte offsets in the file; reading into an aligned buffer
    puts them on 64-byte addresses like torch's own allocations, so SIMD kernels take the
    same path and a cached embedding decodes bit-identically to a fresh one.
    """
    raw = np.empty(size + ALIGN, dtype=np.uint8)
    shift = (-raw.ctypes.data) % ALIGN
    return raw[shift : shift + size]


def decode_entry(buf: np.ndarray, key: str, device: Any = None) -> Embedding:
    """The embedding held in ``buf`` (a whole entry file as ``uint8``), checked against ``key``.

    Torch leaves come back as tensors on ``device`` (default: the device they were
    stored from). Raises one of :data:`DECODE_ERRORS` for a bad entry.
    """
    header, payload = _parse(buf, key)
    leaves = [_leaf(payload, info, device) for info in header["arrays"]]
    return Embedding(
        model=header["model"],
        features=_unflatten(header["tree"], leaves),
        image_size=(int(header["image_size"][0]), int(header["image_size"][1])),
        input_size=(int(header["input_size"][0]), int(header["input_size"][1])),
        key=key,
        extras=dict(header.get("extras", {})),
    )


def _parse(buf: np.ndarray, key: str) -> tuple[dict[str, Any], np.ndarray]:
    if len(buf) < _PREFIX or bytes(buf[: len(MAGIC)]) != MAGIC:
        raise ValueError("not a terramask embedding file (bad magic)")
    (hlen,) = struct.unpack_from("<Q", bytes(buf[len(MAGIC) : _PREFIX]))
    if _PREFIX + hlen > len(buf):
        raise ValueError("truncated header")
    try:
        header = json.loads(bytes(buf[_PREFIX : _PREFIX + hlen]))
    except ValueError:
        raise ValueError("unreadable header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {header.get('format') if isinstance(header, dict) else '?'} != {FORMAT_VERSION}")
    if header.get("key") != key:
        raise ValueError("entry holds another key (stale)")
    payload = buf[_PREFIX + hlen :]
    if len(payload) != header["payload_nbytes"]:
        raise ValueError(f"payload is {len(payload)} bytes, header says {header['payload_nbytes']} (truncated)")
    if hashlib.blake2b(payload.data, digest_size=32).hexdigest() != header["checksum"]:
        raise ValueError("checksum mismatch (corrupt)")
    for info in header["arrays"]:
        if info["offset"] + info["nbytes"] > len(payload):
            raise ValueError("array outside payload")
    return header, payload


def _leaf(payload: np.ndarray, info: dict[str, Any], device: Any) -> Any:
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
