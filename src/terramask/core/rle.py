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


def window_change_positions(win: np.ndarray, x0: int, y0: int, rows_total: int) -> np.ndarray:
    """Column-major flat positions (on a grid with ``rows_total`` rows) where the value
    changes, for a grid that is all False except ``win (h, w)`` placed at ``(x0, y0)``.

    Position ``p`` means "pixel ``p`` differs from pixel ``p - 1``". Sorted, int64. Only
    the window is touched, so the cost grows with the window, not the grid.
    """
    win = np.asarray(win, dtype=bool)
    h, w = win.shape
    if h == 0 or w == 0:
        return np.zeros(0, dtype=np.int64)
    padded = np.zeros((h + 2, w), dtype=bool)
    padded[1:-1] = win
    change = padded[1:] != padded[:-1]  # (h + 1, w): change before padded row k + 1
    cols, ks = np.nonzero(change.T)  # column-major order
    return (x0 + cols.astype(np.int64)) * int(rows_total) + (y0 + ks.astype(np.int64))


def positions_to_counts(positions: np.ndarray, total: int) -> list[int]:
    """Change positions (see :func:`window_change_positions`; any order, from one or
    several windows with disjoint columns) -> uncompressed RLE counts over ``total``
    pixels (first run = zeros, possibly empty). A position given twice cancels out (a
    column ending on the grid's last row, the next starting on its first)."""
    pos, times = np.unique(np.asarray(positions, dtype=np.int64), return_counts=True)
    pos = pos[(times % 2 == 1) & (pos < total)]
    if pos.size == 0:
        return [int(total)]
    edges = np.concatenate([[0], pos, [total]])
    return np.diff(edges).tolist()


def window_to_rle(win: np.ndarray, x0: int, y0: int, shape: tuple[int, int]) -> dict:
    """Uncompressed RLE over the whole ``shape`` ``(H, W)`` grid of a mask that is empty
    except for ``win`` at ``(x0, y0)``; identical to :func:`mask_to_rle` of the full mask,
    without building it (the RLE of an object on a 100,000² scene is a few runs per
    column of its window)."""
    rows, cols = int(shape[0]), int(shape[1])
    counts = positions_to_counts(window_change_positions(win, x0, y0, rows), rows * cols)
    return {"size": [rows, cols], "counts": counts}
