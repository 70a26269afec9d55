"""Compact storage of many masks on one grid: each mask is its tight bounding window plus
the window's pixels packed 8 per byte.

Automatic mask generation keeps hundreds to thousands of candidate masks alive between
decoding and duplicate removal. Full-grid boolean stacks (``N x H x W`` bytes) are what
makes the reference generator's memory explode; here a mask costs ``area(bbox) / 8``
bytes, and RLE (column-major, COCO convention) is encoded straight from the window.

Frames: windows are ``(x0, y0, x1, y1)`` end-exclusive pixels of the grid; ``boxes()``
returns the reference's end-inclusive xyxy boxes (``x1`` = last column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from terramask.core.errors import InputError


def tight_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` end-exclusive bounds of the True pixels of ``(h, w)``, or ``None``."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def window_rle_counts(win: np.ndarray, x0: int, y0: int, shape: tuple[int, int]) -> list[int]:
    """Uncompressed RLE counts of a grid that is all False except ``win (h, w)`` placed at
    ``(x0, y0)``: runs in column-major order starting with a (possibly empty) run of
    zeros, identical to ``segment_anything``'s ``mask_to_rle_pytorch`` on the full grid."""
    rows_total, cols_total = shape
    total = rows_total * cols_total
    h, w = win.shape
    if h == 0 or w == 0:
        return [total]
    if y0 == 0 and h == rows_total:
        flat = np.ascontiguousarray(win.T).ravel()
        padded = np.concatenate([[False], flat, [False]])
        pos = np.flatnonzero(padded[1:] != padded[:-1]) + x0 * rows_total
    else:
        padded = np.zeros((h + 2, w), dtype=bool)
        padded[1:-1] = win
        change = padded[1:] != padded[:-1]  # (h + 1, w): change before padded row k + 1
        cols, ks = np.nonzero(change.T)  # column-major order
        pos = (x0 + cols) * rows_total + (y0 + ks)
    pos = pos[pos < total]
    if pos.size == 0:
        return [total]
    edges = np.concatenate([[0], pos, [total]])
    return np.diff(edges).tolist()


@dataclass
class CompactMasks:
    """``N`` masks on an ``(H, W)`` grid stored as tight windows of packed bits.

    ``windows (N, 4)`` int64 end-exclusive ``(x0, y0, x1, y1)`` (all zero for an empty
    mask); ``bits`` the row-major ``np.packbits`` of each window; ``areas (N,)`` int64.
    """

    shape: tuple[int, int]
    windows: np.ndarray
    bits: list[np.ndarray]
    areas: np.ndarray

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "CompactMasks":
        return cls((int(shape[0]), int(shape[1])), np.zeros((0, 4), np.int64), [], np.zeros(0, np.int64))

    @classmethod
    def from_windows(cls, shape: tuple[int, int], items: Iterable[tuple[Sequence[int], np.ndarray]]) -> "CompactMasks":
        """From ``(origin (x0, y0), bool window)`` pairs; each window is trimmed to its mask."""
        windows, bits, areas = [], [], []
        for (ox, oy), win in items:
            win = np.asarray(win, dtype=bool)
            tw = tight_window(win)
            if tw is None:
                windows.append((0, 0, 0, 0))
                bits.append(np.zeros(0, np.uint8))
                areas.append(0)
                continue
            a, b, c, d = tw
            sub = win[b:d, a:c]
            windows.append((ox + a, oy + b, ox + c, oy + d))
            bits.append(np.packbits(sub, axis=None))
            areas.append(int(np.count_nonzero(sub)))
        out = cls((int(shape[0]), int(shape[1])), np.asarray(windows, np.int64).reshape(-1, 4), bits, np.asarray(areas, np.int64))
        out._check()
        return out

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> "CompactMasks":
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise InputError(f"masks must be (N, H, W), got shape {masks.shape}")
        return cls.from_windows(masks.shape[1:], (((0, 0), m) for m in masks))

    @classmethod
    def concat(cls, parts: Sequence["CompactMasks"], shape: tuple[int, int] | None = None) -> "CompactMasks":
        parts = list(parts)
        if not parts:
            if shape is None:
                raise InputError("cannot concatenate zero mask collections without a grid shape")
            return cls.empty(shape)
        shape = parts[0].shape if shape is None else shape
        for p in parts:
            if p.shape != tuple(shape):
                raise InputError(f"mask collections on different grids: {p.shape} vs {shape}")
        return cls(
            parts[0].shape,  # equal to tuple(shape): checked above for every part
            np.concatenate([p.windows for p in parts]).reshape(-1, 4),
            [b for p in parts for b in p.bits],
            np.concatenate([p.areas for p in parts]),
        )

    def _check(self) -> None:
        h, w = self.shape
        nz = self.areas > 0
        ws = self.windows[nz]
        if ws.size and (ws[:, 0].min() < 0 or ws[:, 1].min() < 0 or ws[:, 2].max() > w or ws[:, 3].max() > h):
            raise InputError(f"mask windows extend outside the {w}x{h} grid")

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.bits)

    @property
    def nbytes(self) -> int:
        return int(sum(b.nbytes for b in self.bits) + self.windows.nbytes + self.areas.nbytes)

    def window(self, i: int) -> tuple[tuple[int, int], np.ndarray]:
        """``((x0, y0), bool (h, w))`` the tight window of mask ``i`` (empty: size 0)."""
        x0, y0, x1, y1 = (int(v) for v in self.windows[i])
        h, w = y1 - y0, x1 - x0
        if h <= 0 or w <= 0:
            return (0, 0), np.zeros((0, 0), dtype=bool)
        arr = np.unpackbits(self.bits[i], count=h * w).reshape(h, w).astype(bool)
        return (x0, y0), arr

    def dense(self, i: int) -> np.ndarray:
        """Mask ``i`` as ``(H, W)`` bool."""
        out = np.zeros(self.shape, dtype=bool)
        (x0, y0), win = self.window(i)
        out[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = win
        return out

    def to_dense(self) -> np.ndarray:
        """All masks as ``(N, H, W)`` bool (memory: ``N * H * W`` bytes)."""
        out = np.zeros((len(self), *self.shape), dtype=bool)
        for i in range(len(self)):
            (x0, y0), win = self.window(i)
            out[i, y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = win
        return out

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` float64 end-inclusive xyxy boxes (reference convention), empty -> 0."""
        out = self.windows.astype(np.float64)
        nz = self.areas > 0
        out[nz, 2] -= 1
        out[nz, 3] -= 1
        out[~nz] = 0
        return out

    def rle(self, i: int) -> dict:
        """Uncompressed RLE ``{"size": [H, W], "counts": [...]}`` of mask ``i``."""
        (x0, y0), win = self.window(i)
        return {"size": [int(self.shape[0]), int(self.shape[1])], "counts": window_rle_counts(win, x0, y0, self.shape)}

    def subset(self, idx: Sequence[int] | np.ndarray) -> "CompactMasks":
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return CompactMasks(self.shape, self.windows[idx].reshape(-1, 4), [self.bits[int(i)] for i in idx], self.areas[idx])

    def shifted(self, dx: int, dy: int, shape: tuple[int, int]) -> "CompactMasks":
        """The same masks placed at offset ``(dx, dy)`` on a grid of ``shape`` (uncrop)."""
        windows = self.windows.copy()
        nz = self.areas > 0
        windows[nz] += np.array([dx, dy, dx, dy], dtype=np.int64)
        out = CompactMasks((int(shape[0]), int(shape[1])), windows, list(self.bits), self.areas.copy())
        out._check()
        return out

    def replace(self, i: int, origin: tuple[int, int], win: np.ndarray) -> None:
        """Store a new window for mask ``i`` (trimmed), in place."""
        one = CompactMasks.from_windows(self.shape, [(origin, win)])
        self.windows[i] = one.windows[0]
        self.bits[i] = one.bits[0]
        self.areas[i] = one.areas[0]
