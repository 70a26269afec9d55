"""Regions of interest (ROI) of the classic prompted engine: image-pixel bounds, the
working raster they are resampled to, and small box helpers. Boxes are end-exclusive
``(x0, y0, x1, y1)`` in image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """End-exclusive ``(x0, y0, x1, y1)`` of a bool mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class Roi:
    """A ROI of the image (end-exclusive bounds) and the size of its working raster."""

    x0: int
    y0: int
    x1: int
    y1: int
    wh: int
    ww: int
    open_sides: tuple[bool, bool, bool, bool]  # left, top, right, bottom not on the image border

    @property
    def sx(self) -> float:
        return self.ww / (self.x1 - self.x0)

    @property
    def sy(self) -> float:
        return self.wh / (self.y1 - self.y0)

    @property
    def size(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def to_work(self, pts: np.ndarray) -> np.ndarray:
        """Image ``(x, y)`` pixel coordinates -> working-raster pixel coordinates."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - self.x0 + 0.5) * self.sx - 0.5
        out[:, 1] = (pts[:, 1] - self.y0 + 0.5) * self.sy - 0.5
        return out

    def box_mask(self, box: np.ndarray) -> np.ndarray:
        """Working-raster pixels whose footprint overlaps the box ``(4,)`` xyxy."""
        x0 = int(np.clip(np.floor((box[0] - self.x0) * self.sx), 0, self.ww - 1))
        y0 = int(np.clip(np.floor((box[1] - self.y0) * self.sy), 0, self.wh - 1))
        x1 = int(np.clip(np.ceil((box[2] - self.x0) * self.sx), x0 + 1, self.ww))
        y1 = int(np.clip(np.ceil((box[3] - self.y0) * self.sy), y0 + 1, self.wh))
        out = np.zeros((self.wh, self.ww), dtype=bool)
        out[y0:y1, x0:x1] = True
        return out

    def ring(self, open_only: bool) -> np.ndarray:
        """1-px frame of the working raster (only its open sides when ``open_only``)."""
        ring = np.zeros((self.wh, self.ww), dtype=bool)
        left, top, right, bottom = self.open_sides if open_only else (True, True, True, True)
        ring[:, 0] |= left
        ring[0, :] |= top
        ring[:, -1] |= right
        ring[-1, :] |= bottom
        return ring


def make_roi(bounds: tuple[float, float, float, float], shape: tuple[int, int], work_side: int) -> Roi:
    h, w = shape
    x0 = int(np.clip(np.floor(bounds[0]), 0, w - 1))
    y0 = int(np.clip(np.floor(bounds[1]), 0, h - 1))
    x1 = int(np.clip(np.ceil(bounds[2]), x0 + 1, w))
    y1 = int(np.clip(np.ceil(bounds[3]), y0 + 1, h))
    rh, rw = y1 - y0, x1 - x0
    s = min(1.0, work_side / max(rh, rw))
    wh, ww = max(1, int(round(rh * s))), max(1, int(round(rw * s)))
    return Roi(x0, y0, x1, y1, wh, ww, (x0 > 0, y0 > 0, x1 < w, y1 < h))


def union(*boxes) -> tuple[float, float, float, float]:
    bs = np.array([b for b in boxes if b is not None], dtype=np.float64).reshape(-1, 4)
    return (bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max())


def extent(box) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def expand(box, margin: float) -> tuple[float, float, float, float]:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)
