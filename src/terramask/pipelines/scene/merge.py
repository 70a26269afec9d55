"""Cross-tile merging: masks of overlapping tiles -> one object per real object.

A large scene is segmented tile by tile (:func:`terramask.core.plan_tiles`: a regular,
row-major grid of windows that share ``overlap`` pixels with their neighbours). An object
near a tile edge is then seen by several tiles: whole by some, cut at the edge by others,
or only in parts when it is larger than a tile. :class:`TileMerger` turns the per-tile
masks into objects, consuming tiles in grid order and keeping only what a later tile can
still touch:

1. Each tile mask becomes a :class:`Part`: its bounding box in scene pixels, the mask
   cropped to that box (bit-packed), its scores, and which *interior* tile edges it
   touches (within ``edge_margin`` pixels; scene borders do not count). A part that
   touches no interior edge is *complete*: its tile saw the whole object.
2. A new tile's parts are compared with the pending parts of earlier tiles whose windows
   overlap it. Their intersection lies in the shared overlap region ``R`` (the region
   both tiles see). Two parts of the same class (``Part.cls``: None for automatic masks,
   a class name for ``terramask find``, so this per-class merge is also the per-class NMS
   across tile overlaps) are the **same object** when

   - both are complete and their IoU is at least ``iou_thresh`` (duplicates of an object
     lying in the overlap);
   - one is complete and at least ``contain_thresh`` of the other (partial) one lies
     inside it: the partial mask is a cut view of an object the other tile sees whole;
   - both are partial and their IoU *inside* ``R`` is at least ``iou_thresh`` (the
     pieces of an object larger than the overlap, or larger than a tile).

   Matches join components (union-find), best IoU inside ``R`` first (then best IoU of
   the whole masks). Two parts of the same tile never join when they overlap each other
   (by more than ``conflict_frac`` of the smaller one): they are different objects (e.g.
   a field and the farm holding it, from a multi-scale generator), so a chain of matches
   cannot glue them together. Disjoint parts of one tile may join (an object leaving and
   re-entering a tile).
3. A component is final once no later tile's window meets its bounding box. It becomes a
   :class:`MergedObject`: if some member is complete, the best complete member
   (highest score, then largest) — duplicates and partial views inside it are dropped;
   otherwise (an object no tile saw whole) the union of its members, each cut to its
   tile's *core* (the window cut at the middle of each overlap): pieces that do not
   overlap, every pixel decided by the tile that sees it most centrally.

Memory: only parts whose component can still meet a later tile are kept, bit-packed —
roughly the masks along one row of tile overlaps, independent of the scene height; the
full scene or a scene-sized mask stack never exists. This module is numpy only; the
pixels of finished objects are painted and polygonised by :mod:`terramask.pipelines.scene.tiled`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from terramask.core.errors import InputError
from terramask.pipelines.scene.grid import (  # noqa: F401  (re-exported: the merge's vocabulary)
    EDGE_BOTTOM,
    EDGE_LEFT,
    EDGE_RIGHT,
    EDGE_TOP,
    Box,
    TileGrid,
    boxes_meet,
    meet,
    union_box,
)
from terramask.pipelines.scene.merged import MergedObject, make_object
from terramask.pipelines.scene.parts import Part, parts_from_maskset, parts_from_windows  # noqa: F401

_make_object = make_object  # the name tests used before the split


@dataclass(frozen=True)
class MergeParams:
    """Thresholds of the cross-tile merge (see the module docstring).

    - ``iou_thresh``: IoU inside the shared overlap region above which two parts are the
      same object (0 < t <= 1);
    - ``contain_thresh``: share of a partial part that must lie inside a complete part of
      the other tile for it to count as a cut view of that object (0 < t <= 1);
    - ``edge_margin``: pixels from an interior tile edge within which a mask counts as
      touching it (>= 1; 1 = the edge pixel row/column itself);
    - ``conflict_frac``: two parts of the same tile overlapping by more than this share of
      the smaller one are never merged (0 <= f < 1);
    - ``max_object_size``: an object never grows beyond this many pixels in width or height
      (None: no limit). A region running through the whole scene (a forest, the sea) then
      comes out as several objects of at most this size, which keeps the memory, time and
      polygon size of one object bounded whatever the scene size.
    """

    iou_thresh: float = 0.5
    contain_thresh: float = 0.8
    edge_margin: int = 2
    conflict_frac: float = 0.1
    max_object_size: int | None = 4096

    def __post_init__(self) -> None:
        for name in ("iou_thresh", "contain_thresh"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 < value <= 1.0:
                raise InputError(f"merge {name} must be a number in (0, 1], got {value!r}")
        if not isinstance(self.edge_margin, (int, np.integer)) or self.edge_margin < 1:
            raise InputError(f"merge edge_margin must be an integer >= 1 pixel, got {self.edge_margin!r}")
        if not isinstance(self.conflict_frac, (int, float)) or not 0.0 <= self.conflict_frac < 1.0:
            raise InputError(f"merge conflict_frac must be a number in [0, 1), got {self.conflict_frac!r}")
        if self.max_object_size is not None and (
                not isinstance(self.max_object_size, (int, np.integer)) or self.max_object_size < 1):
            raise InputError(f"merge max_object_size must be a positive number of pixels or None, got {self.max_object_size!r}")

    def to_dict(self) -> dict:
        return {"iou_thresh": self.iou_thresh, "contain_thresh": self.contain_thresh,
                "edge_margin": int(self.edge_margin), "conflict_frac": self.conflict_frac,
                "max_object_size": None if self.max_object_size is None else int(self.max_object_size)}


class _Component:
    __slots__ = ("members", "ids", "box", "last")

    def __init__(self, part: Part, last: int) -> None:
        self.members = [part]
        self.ids = {part.id}
        self.box = part.box
        self.last = last


class _Masks:
    """Unpacked crops and per-region pixel counts, cached for one tile step."""

    def __init__(self) -> None:
        self._crops: dict[int, np.ndarray] = {}
        self._counts: dict[tuple[int, Box], int] = {}

    def crop(self, part: Part) -> np.ndarray:
        m = self._crops.get(part.id)
        if m is None:
            m = self._crops[part.id] = part.mask()
        return m

    def view(self, part: Part, region: Box) -> np.ndarray:
        """The part's mask inside ``region`` (which must lie inside its box)."""
        x0, y0 = part.box[0], part.box[1]
        return self.crop(part)[region[1] - y0 : region[3] - y0, region[0] - x0 : region[2] - x0]

    def count_in(self, part: Part, region: Box) -> int:
        key = (part.id, region)
        n = self._counts.get(key)
        if n is None:
            inner = meet(part.box, region)
            n = 0 if inner is None else int(np.count_nonzero(self.view(part, inner)))
            self._counts[key] = n
        return n


class TileMerger:
    """Merge the parts of a tile grid, tile by tile, in grid order.

    ``add_tile(seq, parts)`` must be called for ``seq = 0, 1, …`` (an empty list for
    skipped tiles); it returns the objects that no later tile can change any more.
    ``finish()`` returns the rest. Objects come out sorted by their first part.
    """

    def __init__(self, grid: TileGrid, params: MergeParams | None = None) -> None:
        self.grid = grid
        self.params = params or MergeParams()
        self._next_seq = 0
        self._next_id = 1
        self._parent: dict[int, int] = {}
        self._comps: dict[int, _Component] = {}
        self._by_tile: dict[int, dict[int, Part]] = defaultdict(dict)
        self._buckets: dict[int, set[int]] = defaultdict(set)
        self.stats = {"parts": 0, "matches": 0, "blocked": 0, "capped": 0, "pending_peak": 0}

    # -- union-find ----------------------------------------------------------------------
    def _find(self, pid: int) -> int:
        root = pid
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[pid] != root:
            self._parent[pid], pid = root, self._parent[pid]
        return root

    def _union(self, a: Part, b: Part) -> bool:
        ra, rb = self._find(a.id), self._find(b.id)
        if ra == rb:
            return True
        ca, cb = self._comps[ra], self._comps[rb]
        small, large = (ca, cb) if len(ca.members) <= len(cb.members) else (cb, ca)
        for m in small.members:
            if m.conflicts and not m.conflicts.isdisjoint(large.ids):
                self.stats["blocked"] += 1
                return False
        box = union_box([large.box, small.box])
        cap = self.params.max_object_size
        if cap is not None and max(box[2] - box[0], box[3] - box[1]) > cap:
            self.stats["capped"] += 1
            return False
        r_small, r_large = (ra, rb) if small is ca else (rb, ra)
        self._buckets[small.last].discard(r_small)
        self._buckets[large.last].discard(r_large)
        self._parent[r_small] = r_large
        large.members.extend(small.members)
        large.ids |= small.ids
        large.box = box
        large.last = max(self.grid.last_seq_meeting(large.box), self._next_seq)
        self._buckets[large.last].add(r_large)
        del self._comps[r_small]
        self.stats["matches"] += 1
        return True

    # -- tiles --------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def pending_parts(self) -> int:
        return len(self._parent)

    def add_tile(self, seq: int, parts: Sequence[Part]) -> list[MergedObject]:
        """Merge tile ``seq``'s parts with the pending ones; return the objects now final."""
        if seq != self._next_seq:
            raise InputError(f"tiles must be merged in grid order: expected tile {self._next_seq}, got {seq}")
        if seq >= len(self.grid):
            raise InputError(f"tile {seq} is not in the {len(self.grid)}-tile grid")
        parts = list(parts)
        for p in parts:
            if p.tile != seq:
                raise InputError(f"part of tile {p.tile} given for tile {seq}")
            p.id = self._next_id
            self._next_id += 1
            p.conflicts = set()
        self.stats["parts"] += len(parts)
        masks = _Masks()
        neighbours = self.grid.neighbours(seq)
        band = self._band_parts(seq, parts, neighbours)
        self._mark_conflicts(band, masks)
        for p in parts:
            self._parent[p.id] = p.id
            last = max(self.grid.last_seq_meeting(p.box), seq)
            self._comps[p.id] = _Component(p, last)
            self._buckets[last].add(p.id)
        self._match(seq, band, [u for u in neighbours if u < seq], masks)
        for p in band:
            self._by_tile[seq][p.id] = p
        self._next_seq += 1
        self.stats["pending_peak"] = max(self.stats["pending_peak"], len(self._parent))
        return self._finalise(self._buckets.pop(seq, set()))

    def finish(self) -> list[MergedObject]:
        """Every remaining object. All tiles must have been added."""
        if self._next_seq != len(self.grid):
            raise InputError(f"merge finished after {self._next_seq} of {len(self.grid)} tiles")
        roots = set()
        for key in list(self._buckets):
            roots |= self._buckets.pop(key)
        return self._finalise(roots)

    def _band_parts(self, seq: int, parts: list[Part], neighbours: list[int]) -> list[Part]:
        """Parts meeting another tile's window: the only ones that can ever merge."""
        if not parts or not neighbours:
            return []
        boxes = np.array([p.box for p in parts], dtype=np.int64)
        windows = np.array([self.grid.window(u).bounds for u in neighbours], dtype=np.int64)
        hit: np.ndarray = np.asarray(boxes_meet(boxes, windows).any(axis=1))
        return [p for p, h in zip(parts, hit.tolist(), strict=True) if h]

    def _mark_conflicts(self, parts: list[Part], masks: _Masks) -> None:
        """Record pairs of same-tile parts that overlap each other (never to be merged)."""
        if len(parts) < 2:
            return
        boxes = np.array([p.box for p in parts], dtype=np.int64)
        pairs = np.triu(boxes_meet(boxes, boxes), k=1)
        frac = self.params.conflict_frac
        for i, j in zip(*np.nonzero(pairs), strict=True):
            a, b = parts[i], parts[j]
            region = meet(a.box, b.box)
            if region is None:  # boxes that meet always share a region
                continue
            inter = int(np.count_nonzero(masks.view(a, region) & masks.view(b, region)))
            if inter > frac * min(a.area, b.area):
                a.conflicts.add(b.id)
                b.conflicts.add(a.id)

    def _match(self, seq: int, new: list[Part], earlier: list[int], masks: _Masks) -> None:
        """Join the new tile's parts with matching pending parts of earlier tiles."""
        p = self.params
        pairs: list[tuple[float, float, int, int, Part, Part]] = []
        win = self.grid.window(seq).bounds
        for u in earlier:
            old = list(self._by_tile.get(u, {}).values())
            region = meet(win, self.grid.window(u).bounds)
            if not old or not new or region is None:
                continue
            a_parts = [q for q in new if meet(q.box, region)]
            b_parts = [q for q in old if meet(q.box, region)]
            if not a_parts or not b_parts:
                continue
            a_boxes = np.array([q.box for q in a_parts], dtype=np.int64)
            b_boxes = np.array([q.box for q in b_parts], dtype=np.int64)
            for i, j in zip(*np.nonzero(boxes_meet(a_boxes, b_boxes)), strict=True):
                a, b = a_parts[i], b_parts[j]
                if a.cls != b.cls:  # parts of different classes are different objects
                    continue
                pair = meet(a.box, b.box)
                inner = None if pair is None else meet(pair, region)
                if inner is None:
                    continue
                inter = int(np.count_nonzero(masks.view(a, inner) & masks.view(b, inner)))
                if inter == 0:
                    continue
                na, nb = masks.count_in(a, region), masks.count_in(b, region)
                iou_band = inter / (na + nb - inter)
                iou_all = inter / (a.area + b.area - inter)
                if a.complete and b.complete:
                    ok = iou_all >= p.iou_thresh
                elif a.complete or b.complete:
                    partial = b if a.complete else a
                    ok = inter / partial.area >= p.contain_thresh
                else:
                    ok = iou_band >= p.iou_thresh
                if ok:
                    pairs.append((iou_band, iou_all, a.id, b.id, a, b))
        # Best agreement in the overlap first; equal agreement there (an object and a larger
        # one holding it may look alike in a narrow band) is decided by the whole masks.
        for *_, a, b in sorted(pairs, key=lambda t: (-t[0], -t[1], t[2], t[3])):
            self._union(a, b)

    def _finalise(self, roots: set[int]) -> list[MergedObject]:
        out = []
        for root in roots:
            comp = self._comps.pop(root)
            for m in comp.members:
                del self._parent[m.id]
                self._by_tile.get(m.tile, {}).pop(m.id, None)
            out.append(make_object(comp.members, self.params.contain_thresh, self.grid))
        for tile in [t for t, d in self._by_tile.items() if not d]:
            del self._by_tile[tile]
        out.sort(key=lambda o: o.key)
        return out


def merge_tiles(grid: TileGrid, tile_parts: Iterable[tuple[int, Sequence[Part]]],
                params: MergeParams | None = None) -> list[MergedObject]:
    """Merge every tile at once (``(seq, parts)`` in grid order); for tests and small scenes."""
    merger = TileMerger(grid, params)
    out = []
    for seq, parts in tile_parts:
        out.extend(merger.add_tile(seq, parts))
    out.extend(merger.finish())
    return out
