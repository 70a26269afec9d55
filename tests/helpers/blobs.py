"""Deterministic fake tile segmenter and synthetic scenes with objects across tile edges.

:class:`BlobSegmenter` is a picklable segmenter factory (the shape
``run_scene(path, out, segmenter)`` expects): its tile function thresholds the tile's RGB
(as the model would receive it: scene-wide stretch) and returns one mask per 8-connected
bright blob, so tests of tiling and merging need no model. :func:`blob_scene` draws
bright rectangles and discs at given places on a noisy dark ground, with an optional
nodata strip, and returns the pixels and the true object masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terramask.core.maskset import MaskSet


@dataclass(frozen=True)
class BlobSegmenter:
    """``BlobSegmenter(threshold)()`` -> ``segment_tile(image) -> MaskSet``."""

    threshold: int = 128
    min_area: int = 4

    def __call__(self):
        return self.segment

    def segment(self, image) -> MaskSet:
        import cv2

        grey = image.to_rgb8().mean(axis=2)
        n, lab, stats, _ = cv2.connectedComponentsWithStats((grey > self.threshold).astype(np.uint8), connectivity=8)
        keep = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= self.min_area]
        masks = np.stack([lab == k for k in keep]) if keep else np.zeros((0, *grey.shape), dtype=bool)
        scores = np.array([0.5 + 0.5 * grey[m].mean() / 255 for m in masks], dtype=np.float32)
        stability = np.linspace(0.9, 1.0, len(masks), dtype=np.float32)
        return MaskSet(masks, scores, extras={"stability_score": stability},
                       transform=image.transform, crs=image.crs)

    def describe(self) -> dict:
        return {"model": "blobs", "params": {"threshold": self.threshold}}


def rect(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def disc(shape, cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def blob_scene(shape, objects, nodata_cols: int = 0, seed: int = 0, dtype=np.uint16):
    """``(3, rows, cols)`` pixels: ground ~1000 +- 100, objects +3000; the last
    ``nodata_cols`` columns are 0 (nodata). ``objects`` are (H, W) bool masks."""
    rng = np.random.default_rng(seed)
    px = rng.integers(900, 1100, size=(3, *shape)).astype(dtype)
    for obj in objects:
        px[:, obj] += 3000
    if nodata_cols:
        px[:, :, shape[1] - nodata_cols :] = 0
    return px
