"""A small scene of 24 squares for segment-everything and workspace tests (tests/web)."""

from __future__ import annotations

import numpy as np

SCENE_W, SCENE_H = 320, 256
#: Square side (pixels) and upper-left corners (x, y), row by row.
SIDE = 30
CORNERS = [(15 + j * 50, 20 + i * 60) for i in range(4) for j in range(6)]
#: Square centres (scene pixels), row by row.
CENTRES = [(x + SIDE // 2, y + SIDE // 2) for x, y in CORNERS]


def squares_scene() -> np.ndarray:
    """``(3, 256, 320)`` uint16: 24 squares of 30 px (two brightnesses, alternating) on a
    noisy dark ground (~1000 +- 100)."""
    rng = np.random.default_rng(0)
    px = rng.integers(900, 1100, size=(3, SCENE_H, SCENE_W)).astype(np.uint16)
    for k, (x, y) in enumerate(CORNERS):
        i, j = divmod(k, 6)
        px[:, y:y + SIDE, x:x + SIDE] += 3000 if (i + j) % 2 else 1800
    return px
