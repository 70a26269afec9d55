"""Objects assembled from tile parts by the cross-tile merge
(:mod:`terramask.pipelines.scene.merge`): which part represents an object, and which
pixels of which part make it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from terramask.pipelines.scene.grid import Box, TileGrid, meet, union_box
from terramask.pipelines.scene.parts import Part


def _quality(part: Part) -> tuple:
    """Sort key, best first: higher score, larger, earlier."""
    return (-part.score, -part.area, part.id)


@dataclass
class MergedObject:
    """One object assembled from tile parts.

    ``parts``: the parts whose pixels make the object, sorted by id, and ``regions`` the
    scene box each one contributes inside: its own box for a part a tile saw whole, or —
    for an object no tile saw whole — its box cut to its tile's core
    (:meth:`TileGrid.core`), so the pieces do not overlap and each pixel comes from the
    tile that sees it most centrally. ``members``: every part that matched, dropped
    duplicates and partial views included; ``representative``: the part whose scores and
    tile the object reports (the complete winner, else the largest part).
    """

    parts: list[Part]
    members: list[Part]
    representative: Part
    regions: list[Box] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.regions:
            self.regions = [p.box for p in self.parts]

    @property
    def complete(self) -> bool:
        return self.representative.complete

    @property
    def disjoint(self) -> bool:
        """The pieces cannot overlap: a single part, or parts of different tiles cut to
        their cores (two parts of one tile may overlap a little)."""
        if len(self.parts) == 1:
            return True
        cut = any(r != p.box for p, r in zip(self.parts, self.regions, strict=True))
        return cut and len({p.tile for p in self.parts}) == len(self.parts)

    @property
    def score(self) -> float:
        return self.representative.score

    @property
    def cls(self) -> str | None:
        """The class of a concept route's object (None for automatic objects)."""
        return self.representative.cls

    @property
    def class_score(self) -> float:
        """Detector/presence/similarity score of a concept route's object (NaN otherwise)."""
        return self.representative.class_score

    @property
    def stability(self) -> float:
        return self.representative.stability

    @property
    def tile(self) -> int:
        return self.representative.tile

    @property
    def tiles(self) -> tuple[int, ...]:
        """Tiles whose masks contributed pixels."""
        return tuple(sorted({p.tile for p in self.parts}))

    @property
    def box(self) -> Box:
        return union_box(self.regions)

    @property
    def key(self) -> int:
        """Smallest member id: a stable order of objects."""
        return min(p.id for p in self.members)

    def pieces(self) -> Iterator[tuple[Box, np.ndarray]]:
        """``(box, bool crop)`` of each part inside its region (scene pixels)."""
        for part, region in zip(self.parts, self.regions, strict=True):
            m = part.mask()
            x0, y0 = part.box[0], part.box[1]
            yield region, m[region[1] - y0 : region[3] - y0, region[0] - x0 : region[2] - x0]

    def mask(self) -> tuple[Box, np.ndarray]:
        """``(box, (rows, cols) bool)``: the object over its box.

        Materialises the whole box: meant for tests and small objects; large objects are
        painted piece by piece (:mod:`terramask.pipelines.scene.tiled`).
        """
        box = self.box
        out = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
        for (x0, y0, x1, y1), m in self.pieces():
            out[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]] |= m
        return box, out


def _overlap(a: Part, b: Part) -> int:
    """Pixels shared by two parts."""
    inner = meet(a.box, b.box)
    if inner is None:
        return 0
    ma = a.mask()[inner[1] - a.box[1] : inner[3] - a.box[1], inner[0] - a.box[0] : inner[2] - a.box[0]]
    mb = b.mask()[inner[1] - b.box[1] : inner[3] - b.box[1], inner[0] - b.box[0] : inner[2] - b.box[0]]
    return int(np.count_nonzero(ma & mb))


def make_object(members: list[Part], contain_thresh: float, grid: TileGrid) -> MergedObject:
    members = sorted(members, key=lambda m: m.id)
    complete = [m for m in members if m.complete]
    if complete:
        best = min(complete, key=_quality)
        # Partial members are cut views of the winner; one reaching well outside it (joined
        # through a chain of partial matches) keeps its pixels.
        extra = [m for m in members if not m.complete and _overlap(m, best) < contain_thresh * m.area]
        parts = sorted([best, *extra], key=lambda m: m.id)
        return MergedObject(parts=parts, members=members, representative=best)
    largest = min(members, key=lambda m: (-m.area, m.id))
    if len(members) == 1:
        return MergedObject(parts=members, members=members, representative=largest)
    parts, regions = [], []
    for m in members:
        region = meet(m.box, grid.core(m.tile))
        if region is None:
            continue
        x0, y0 = m.box[0], m.box[1]
        if m.mask()[region[1] - y0 : region[3] - y0, region[0] - x0 : region[2] - x0].any():
            parts.append(m)
            regions.append(region)
    if not parts:
        # Each tile saw the object only beyond the middle of the overlap (the views
        # disagree): keep the union of the views rather than lose the object.
        return MergedObject(parts=members, members=members, representative=largest)
    return MergedObject(parts=parts, members=members, representative=largest, regions=regions)
