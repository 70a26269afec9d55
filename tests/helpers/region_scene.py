"""A generated field scene with a known region hierarchy, and a backend whose point
prompts answer with those regions (the classic-structure case of ``benchmarks/amg.py``,
with known regions instead of the classic engine's).

:func:`field_scene` draws ``(size, size, 3)`` uint8 "fields": a jittered grid of convex
cells (nearest of random seeds), each a flat colour with noise, with small bright
"buildings" (rectangles) inside some of them. Its levels, ``(3, size, size)`` int32 label
maps, are the hierarchy a point's three candidates come from: 0 = fields and buildings as
separate regions, 1 = buildings merged into their field, 2 = fields merged in 2 x 2
blocks of seeds.

:class:`RegionSceneBackend` is on terramask's backend protocol (SAM's resize rule): for a
point, candidate ``k`` is the level-``k`` region containing it as signed-distance low-res
logits (``classic.features.mask_to_low_res_logits``), predicted IoU
``0.9 + 0.09 * sin(region id)``; it counts the prompts it decodes.
"""

from __future__ import annotations

import numpy as np

from terramask.models.base import Embedding, as_rgb8


def field_scene(size: int = 512, cells: int = 6, buildings: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (size, size, 3) uint8, levels (3, size, size) int32)`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    step = size / cells
    gy, gx = np.mgrid[0:cells, 0:cells]
    seeds = np.stack([(gx + 0.5 + rng.uniform(-0.3, 0.3, gx.shape)) * step,
                      (gy + 0.5 + rng.uniform(-0.3, 0.3, gy.shape)) * step], -1).reshape(-1, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    d = (xx[None] - seeds[:, 0, None, None]) ** 2 + (yy[None] - seeds[:, 1, None, None]) ** 2
    fields = d.argmin(0).astype(np.int32)
    colours = rng.integers(30, 200, size=(len(seeds), 3))
    rgb = colours[fields].astype(np.float32) + rng.normal(0, 4, (size, size, 3))
    fine = fields.copy()
    for b in range(buildings):
        w, h = rng.integers(10, 28, size=2)
        x, y = rng.integers(4, size - 32, size=2)
        fine[y : y + h, x : x + w] = len(seeds) + b
        rgb[y : y + h, x : x + w] = rng.integers(220, 255, size=3)
    groups = (gy // 2 * cells + gx // 2).reshape(-1).astype(np.int32)[fields]
    levels = np.stack([fine, fields, groups])
    return np.clip(rgb, 0, 255).astype(np.uint8), levels


class RegionSceneBackend:
    """Point prompts answered with the regions of ``levels`` (see the module docstring)."""

    name = "region-scene"
    mask_threshold = 0.0
    img_size = 1024

    def __init__(self, levels: np.ndarray) -> None:
        from terramask.models.classic.features import mask_to_low_res_logits
        from terramask.models.upscale import Upscaler

        self.levels = np.asarray(levels, dtype=np.int32)
        self.upscaler = Upscaler(256, 1024)
        self.prompts = 0
        self._logits: dict[tuple[int, int], np.ndarray] = {}
        self._to_logits = mask_to_low_res_logits

    def set_image(self, image) -> Embedding:
        from terramask.models.sam.backend import preprocess_shape

        rgb = as_rgb8(image)
        if rgb.shape[:2] != self.levels.shape[1:]:
            raise ValueError("RegionSceneBackend answers for the whole scene only (no crops)")
        return Embedding(self.name, None, rgb.shape[:2], preprocess_shape(*rgb.shape[:2], 1024))

    def _region(self, level: int, rid: int) -> np.ndarray:
        key = (level, rid)
        if key not in self._logits:
            self._logits[key] = self._to_logits(self.levels[level] == rid)
        return self._logits[key]

    def decode_points(self, embedding, coords, labels):
        pts = np.asarray(coords, dtype=np.float64)[:, 0, :]
        self.prompts += len(pts)
        h, w = self.levels.shape[1:]
        xs = np.clip(pts[:, 0].astype(int), 0, w - 1)
        ys = np.clip(pts[:, 1].astype(int), 0, h - 1)
        low = np.empty((len(pts), 3, 256, 256), np.float32)
        iou = np.empty((len(pts), 3), np.float32)
        for j, (x, y) in enumerate(zip(xs, ys, strict=True)):
            for k in range(3):
                rid = int(self.levels[k, y, x])
                low[j, k] = self._region(k, rid)
                iou[j, k] = 0.9 + 0.09 * np.sin(rid + 3 * k)
        return low, iou

    def upscale_logits(self, embedding, low_res, window=None):
        return self.upscaler(np.asarray(low_res, np.float32), embedding.image_size, embedding.input_size, window)
