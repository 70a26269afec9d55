"""Run-length encoding of binary masks, COCO conventions (numpy only).

Uncompressed RLE is ``{"size": [rows, cols], "counts": [n0, n1, ...]}`` with runs taken
in column-major (Fortran) order, starting with a run of zeros (possibly empty) — the
format of ``segment_anything``'s ``uncompressed_rle`` output. Compressed COCO RLE has
the same runs packed into the ASCII string of pycocotools (``rleToString``).
"""

from __future__ import annotations

import numpy as np


def mask_to_rle(mask: np.ndarray) -> dict:
    """``(H, W)`` bool -> uncompressed RLE dict."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    if flat.size == 0:
        counts = [0]
    return {"size": [rows, cols], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Uncompressed or compressed RLE dict -> ``(H, W)`` bool."""
    rows, cols = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((cols, rows)).T


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE (uncompressed or compressed)."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    return int(sum(counts[1::2]))


def counts_to_string(counts: list[int]) -> str:
    """Pack run lengths into the pycocotools compressed string (LEB128-like, delta coded)."""
    out = []
    for i, value in enumerate(counts):
        x = int(value)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def to_coco_rle(rle: dict) -> dict:
    """Uncompressed RLE -> compressed COCO RLE ``{"size", "counts": str}``."""
    return {"size": list(rle["size"]), "counts": counts_to_string(rle["counts"])}


def mask_to_coco_rle(mask: np.ndarray) -> dict:
    """``(H, W)`` bool -> compressed COCO RLE."""
    return to_coco_rle(mask_to_rle(mask))
