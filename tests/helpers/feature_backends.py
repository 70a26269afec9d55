"""A tiny deterministic SAM-like backend whose features separate colours, for find-similar.

:class:`ColourFeatureBackend` implements the Backend, PointBatchDecoder and FeatureMap
protocols on square images of side ``S`` (a multiple of :data:`CELL`):

- ``feature_map``: one cell per ``CELL x CELL`` pixels; a cell's feature is its mean
  colour centred on grey, ``rgb / 255 - 0.5`` plus a faint fixed pattern (so grey cells are
  not zero vectors). Red and blue objects are far apart, grey ground is a third direction;
- ``decode_points``: 3 candidates per point on a low-res grid of ``S / 2`` pixels
  (4 per cell, like SAM's 256 over 64): the 4-connected region of pixels of the clicked
  pixel's colour (score 0.9), the same region grown by 2 low-res pixels (0.6) and every
  pixel of that colour (0.3); logits +10 / -10;
- ``upscale_logits``: nearest-neighbour x2 (optionally inside a window).

Objects of one colour are therefore "the same kind" and the test can tell whether
examples of one kind find the others and not the other kind.
"""

from __future__ import annotations

import numpy as np

from terramask.core.maskset import MaskSet
from terramask.models.base import Embedding, FeatureGrid, as_rgb8

CELL = 8
RED = (220, 40, 40)
BLUE = (40, 60, 220)
GREY = (128, 128, 128)


def colour_scene(side: int, red: list, blue: list, seed: int = 0) -> tuple[np.ndarray, list, list]:
    """``(side, side, 3)`` uint8 grey ground with red and blue rectangles (``(x0, y0, x1, y1)``
    in pixels, end exclusive) and a little noise; returns the image and the true masks of
    each kind."""
    rng = np.random.default_rng(seed)
    img = np.empty((side, side, 3), dtype=np.uint8)
    img[:] = GREY
    masks: dict[str, list] = {"red": [], "blue": []}
    for kind, boxes, colour in (("red", red, RED), ("blue", blue, BLUE)):
        for x0, y0, x1, y1 in boxes:
            img[y0:y1, x0:x1] = colour
            m = np.zeros((side, side), dtype=bool)
            m[y0:y1, x0:x1] = True
            masks[kind].append(m)
    noise = rng.integers(-6, 7, size=img.shape)
    img = np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)
    return img, masks["red"], masks["blue"]


def _kind(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` int: 0 grey, 1 red, 2 blue (nearest palette colour)."""
    palette = np.array([GREY, RED, BLUE], dtype=np.float32)
    d = ((rgb[:, :, None, :].astype(np.float32) - palette[None, None]) ** 2).sum(axis=3)
    return d.argmin(axis=2)


def _component(kind: np.ndarray, x: int, y: int) -> np.ndarray:
    import cv2

    same = (kind == kind[y, x]).astype(np.uint8)
    _, lab = cv2.connectedComponents(same, connectivity=4)
    return lab == lab[y, x]


class ColourFeatureBackend:
    name = "colour-features"
    mask_threshold = 0.0

    def __init__(self) -> None:
        self.decoded = 0

    def set_image(self, image) -> Embedding:
        rgb = as_rgb8(image)
        side = rgb.shape[0]
        if rgb.shape[1] != side or side % CELL:
            raise ValueError(f"ColourFeatureBackend takes square images of a multiple of {CELL}, got {rgb.shape}")
        extras = {}
        if hasattr(image, "transform"):
            extras = {"transform": image.transform, "crs": image.crs}
        return Embedding(self.name, {"rgb": rgb, "kind": _kind(rgb)}, (side, side), (side, side), extras=extras)

    def feature_map(self, embedding: Embedding) -> FeatureGrid:
        rgb = embedding.features["rgb"].astype(np.float32) / 255.0 - 0.5
        side = rgb.shape[0]
        g = side // CELL
        cells = rgb.reshape(g, CELL, g, CELL, 3).mean(axis=(1, 3))  # (g, g, 3)
        feats = np.concatenate([cells, np.full((g, g, 1), 0.05, np.float32)], axis=2)
        return FeatureGrid(np.ascontiguousarray(feats.transpose(2, 0, 1), dtype=np.float32), (CELL, CELL), CELL // 2)

    def _candidates(self, kind: np.ndarray, x: float, y: float) -> np.ndarray:
        import cv2

        xi, yi = int(np.clip(x, 0, kind.shape[1] - 1)), int(np.clip(y, 0, kind.shape[0] - 1))
        comp = _component(kind, xi, yi)[::2, ::2]
        grown = cv2.dilate(comp.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        every = (kind == kind[yi, xi])[::2, ::2]
        return np.stack([comp, grown, every])

    def decode_points(self, embedding: Embedding, coords: np.ndarray, labels: np.ndarray):
        kind = embedding.features["kind"]
        cands = np.stack([self._candidates(kind, *coords[b, 0]) for b in range(len(coords))]) if len(coords) else \
            np.zeros((0, 3, kind.shape[0] // 2, kind.shape[1] // 2), dtype=bool)
        self.decoded += len(coords)
        iou = np.tile(np.array([0.9, 0.6, 0.3], np.float32), (len(coords), 1))
        return np.where(cands, 10.0, -10.0).astype(np.float32), iou

    def upscale_logits(self, embedding: Embedding, low_res: np.ndarray, window=None) -> np.ndarray:
        up = np.repeat(np.repeat(np.asarray(low_res, np.float32), 2, axis=1), 2, axis=2)
        if window is not None:
            x0, y0, x1, y1 = window
            up = up[:, y0:y1, x0:x1]
        return up

    def predict(self, embedding: Embedding, prompts, multimask: bool = True) -> MaskSet:
        kind = embedding.features["kind"]
        if len(prompts.boxes):
            x0, y0, x1, y1 = prompts.boxes[0]
            x, y = (x0 + x1) / 2, (y0 + y1) / 2
        else:
            x, y = prompts.points[0]
        low = self._candidates(kind, x, y)
        masks = self.upscale_logits(embedding, np.where(low, 10.0, -10.0)) > 0
        scores = np.array([0.9, 0.6, 0.3], np.float32)
        if not multimask:
            masks, scores = masks[:1], scores[:1]
        return MaskSet(masks, scores)
