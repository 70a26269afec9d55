"""A small scene of squares for segment-everything and workspace tests (tests/web): by
default 24 (4 rows of 6), or a taller grid (``rows``) for tests that need more objects."""

from __future__ import annotations

import numpy as np

#: Squares per row, the default number of rows, the pitch (pixels) between square corners.
COLS, ROWS = 6, 4
PITCH_X, PITCH_Y = 50, 60
SCENE_W = 20 + COLS * PITCH_X  # 320
#: Square side (pixels).
SIDE = 30


def scene_height(rows: int = ROWS) -> int:
    """Scene height (pixels) of a grid of ``rows`` rows: 256 for the default 4."""
    return 16 + rows * PITCH_Y


def corners(rows: int = ROWS) -> list[tuple[int, int]]:
    """Upper-left corners ``(x, y)`` (scene pixels) of the squares, row by row."""
    return [(15 + j * PITCH_X, 20 + i * PITCH_Y) for i in range(rows) for j in range(COLS)]


def centres(rows: int = ROWS) -> list[tuple[int, int]]:
    """Square centres ``(x, y)`` (scene pixels), row by row."""
    return [(x + SIDE // 2, y + SIDE // 2) for x, y in corners(rows)]


SCENE_H = scene_height()
CORNERS = corners()
CENTRES = centres()


def squares_scene(rows: int = ROWS) -> np.ndarray:
    """``(3, scene_height(rows), 320)`` uint16: ``rows * 6`` squares of 30 px (two brightnesses,
    alternating like a chessboard) on a noisy dark ground (~1000 +- 100); 24 squares in
    ``(3, 256, 320)`` by default."""
    rng = np.random.default_rng(0)
    px = rng.integers(900, 1100, size=(3, scene_height(rows), SCENE_W)).astype(np.uint16)
    for k, (x, y) in enumerate(corners(rows)):
        i, j = divmod(k, COLS)
        px[:, y:y + SIDE, x:x + SIDE] += 3000 if (i + j) % 2 else 1800
    return px
