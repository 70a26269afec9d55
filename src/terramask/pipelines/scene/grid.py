"""The tile grid of a scene (as :func:`terramask.core.geometry.plan_tiles` makes it) and
box helpers shared by the cross-tile merge (:mod:`terramask.pipelines.scene.merge`).

Boxes are ``(x0, y0, x1, y1)`` in scene pixels, end exclusive.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from terramask.core.errors import InputError
from terramask.core.geometry import Tile, Window

#: Bits of :attr:`terramask.pipelines.scene.parts.Part.edges`: which interior tile edge a mask touches.
EDGE_LEFT, EDGE_TOP, EDGE_RIGHT, EDGE_BOTTOM = 1, 2, 4, 8

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in scene pixels, end exclusive

class TileGrid:
    """The tiles of one scene as planned by :func:`plan_tiles`: a regular row-major grid.

    Tile ``seq`` (its position in the plan) has index ``(seq // ncols, seq % ncols)``.
    Raises :class:`InputError` if ``tiles`` is not such a grid.
    """

    def __init__(self, tiles: Sequence[Tile], width: int, height: int) -> None:
        tiles = list(tiles)
        if not tiles:
            raise InputError("a tile grid needs at least one tile")
        self.tiles = tiles
        self.width, self.height = int(width), int(height)
        self.nrows = max(t.index[0] for t in tiles) + 1
        self.ncols = max(t.index[1] for t in tiles) + 1
        if self.nrows * self.ncols != len(tiles):
            raise InputError(f"{len(tiles)} tiles do not form a {self.nrows}x{self.ncols} grid")
        self.tile_w, self.tile_h = tiles[0].window.width, tiles[0].window.height
        self.row_offs = np.zeros(self.nrows, dtype=np.int64)
        self.col_offs = np.zeros(self.ncols, dtype=np.int64)
        for seq, t in enumerate(tiles):
            r, c = t.index
            w = t.window
            if (r, c) != divmod(seq, self.ncols) or (w.width, w.height) != (self.tile_w, self.tile_h):
                raise InputError("tiles must be a regular row-major grid of equal windows, as plan_tiles makes")
            if c == 0:
                self.row_offs[r] = w.row_off
            if r == 0:
                self.col_offs[c] = w.col_off
            if w.row_off != self.row_offs[r] or w.col_off != self.col_offs[c]:
                raise InputError(f"tile {t.id} is not aligned with its grid row and column")
            if w.bounds[2] > self.width or w.bounds[3] > self.height:
                raise InputError(f"tile {t.id} {w.to_dict()} lies outside the {self.width}x{self.height} scene")
        if np.any(np.diff(self.row_offs) <= 0) or np.any(np.diff(self.col_offs) <= 0):
            raise InputError("tile rows and columns must advance left to right, top to bottom")

    def __len__(self) -> int:
        return len(self.tiles)

    def window(self, seq: int) -> Window:
        return self.tiles[seq].window

    def tile_id(self, seq: int) -> str:
        return self.tiles[seq].id

    def interior_edges(self, seq: int) -> int:
        """Bits of the sides of tile ``seq`` that lie inside the scene (shared with a neighbour)."""
        x0, y0, x1, y1 = self.window(seq).bounds
        bits = 0
        bits |= EDGE_LEFT if x0 > 0 else 0
        bits |= EDGE_TOP if y0 > 0 else 0
        bits |= EDGE_RIGHT if x1 < self.width else 0
        bits |= EDGE_BOTTOM if y1 < self.height else 0
        return bits

    def _span(self, offs: np.ndarray, size: int, lo: int, hi: int) -> tuple[int, int]:
        """Index range ``[first, last]`` of grid lines whose ``[off, off+size)`` meets ``[lo, hi)``."""
        first = int(np.searchsorted(offs + size, lo, side="right"))
        last = int(np.searchsorted(offs, hi, side="left")) - 1
        return first, last

    def seqs_meeting(self, box: Box) -> list[int]:
        """Tiles whose windows meet ``box`` (scene pixels, end exclusive), in order."""
        x0, y0, x1, y1 = box
        r0, r1 = self._span(self.row_offs, self.tile_h, y0, y1)
        c0, c1 = self._span(self.col_offs, self.tile_w, x0, x1)
        return [r * self.ncols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def last_seq_meeting(self, box: Box) -> int:
        """The last tile (in grid order) whose window meets ``box``; -1 if none."""
        x0, y0, x1, y1 = box
        r0, r1 = self._span(self.row_offs, self.tile_h, y0, y1)
        c0, c1 = self._span(self.col_offs, self.tile_w, x0, x1)
        if r1 < r0 or c1 < c0:
            return -1
        return r1 * self.ncols + c1

    def neighbours(self, seq: int) -> list[int]:
        """Other tiles whose windows overlap tile ``seq``."""
        return [s for s in self.seqs_meeting(self.window(seq).bounds) if s != seq]

    @staticmethod
    def _cuts(offs: np.ndarray, size: int, length: int) -> np.ndarray:
        mids = (offs[1:] + offs[:-1] + size) // 2  # middle of each overlap
        return np.concatenate([[0], mids, [length]])

    def core(self, seq: int) -> Box:
        """The pixels tile ``seq`` is closest to the centre of: its window cut at the middle
        of each overlap. The cores of all tiles partition the scene."""
        r, c = divmod(seq, self.ncols)
        xs = self._cuts(self.col_offs, self.tile_w, self.width)
        ys = self._cuts(self.row_offs, self.tile_h, self.height)
        return (int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))


def union_box(boxes: Iterable[Box]) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def meet(a: Box, b: Box) -> Box | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def boxes_meet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x ``(M, 4)`` end-exclusive boxes -> ``(N, M)`` bool: positive-area overlap."""
    return (
        (np.maximum(a[:, None, 0], b[None, :, 0]) < np.minimum(a[:, None, 2], b[None, :, 2]))
        & (np.maximum(a[:, None, 1], b[None, :, 1]) < np.minimum(a[:, None, 3], b[None, :, 3]))
    )
