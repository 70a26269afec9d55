"""The one place where prompts move between frames: lonlat/world -> scene pixels -> tile pixels.

Scene and tile pixel coordinates are continuous ``(x=col, y=row)`` with ``(0, 0)`` at the
upper-left corner of the upper-left pixel (see :mod:`terramask.core.frames`); a point
lies on pixel ``(floor(x), floor(y))`` and is inside a ``cols`` x ``rows`` grid when
``0 <= x < cols`` and ``0 <= y < rows``. Boxes are xyxy; a box in a world CRS becomes the
pixel bounding box of its (densified) outline.

Validity: points outside the scene or on nodata are errors (:class:`PromptError` naming the
coordinate in the user's frame and the scene bounds in that frame). Boxes entirely
outside the scene (or covering only nodata) are errors; boxes partly outside are clipped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Callable, Union

import numpy as np
from affine import Affine

from terramask.core.errors import InputError, PromptError
from terramask.core.frames import pixel_to_world, world_to_pixel
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.crs import LONLAT, crs_equal, transform_xy

log = logging.getLogger(__name__)

#: A scene-sized ``(rows, cols)`` bool array, or a function ``Window -> (h, w) bool``
#: such as :meth:`terramask.io.scene.Scene.valid_mask` (reads only what it needs).
ValidMask = Union[np.ndarray, Callable[[Window], np.ndarray]]

#: Boxes larger than this many pixels are not checked for nodata through a callable
#: ``valid_mask`` (that would read a huge window); their points still are.
MAX_BOX_CHECK_PIXELS = 4096 * 4096

_EDGE_SAMPLES = 21


def _box_outline(box: np.ndarray, n: int = _EDGE_SAMPLES) -> np.ndarray:
    """``(4 * n, 2)`` points along the edges of an xyxy box."""
    x0, y0, x1, y1 = box
    t = np.linspace(0.0, 1.0, n)
    xs = x0 + (x1 - x0) * t
    ys = y0 + (y1 - y0) * t
    return np.concatenate(
        [
            np.stack([xs, np.full(n, y0)], axis=1),
            np.stack([xs, np.full(n, y1)], axis=1),
            np.stack([np.full(n, x0), ys], axis=1),
            np.stack([np.full(n, x1), ys], axis=1),
        ]
    )


def _frame_name(prompts: Prompts, src_crs: str | None) -> str:
    if prompts.frame == "scene":
        return "scene pixels"
    if prompts.frame == "lonlat":
        return "lon/lat"
    if src_crs is None:
        return "the scene CRS"
    return src_crs if len(src_crs) <= 40 else "world CRS"


def _fmt(v: float) -> str:
    return f"{v:.8g}"


class _Converter:
    """Maps user-frame coordinates to scene pixels and describes the scene in the user frame."""

    def __init__(self, prompts: Prompts, scene_crs: str | None, transform: Affine, shape: tuple[int, int], source: str):
        self.frame = prompts.frame
        self.transform = transform
        self.rows, self.cols = int(shape[0]), int(shape[1])
        self.scene_crs = scene_crs
        self.source = source
        if self.frame == "scene":
            self.src_crs = None
        elif self.frame in ("lonlat", "world"):
            self.src_crs = prompts.crs or (LONLAT if self.frame == "lonlat" else scene_crs)
            if scene_crs is None:
                what = "lon/lat" if self.frame == "lonlat" else f"world ({self.src_crs or 'map'})"
                raise PromptError(
                    f"{source} has no CRS, so {what} prompts cannot be placed on it; give pixel coordinates (--crs pixel)"
                )
        else:
            raise PromptError(
                f"prompts in the {self.frame!r} frame cannot be placed on {source}; give them in scene pixels, "
                "lon/lat or a world CRS"
            )
        self.frame_name = _frame_name(prompts, self.src_crs)

    def _crs_pair(self) -> tuple[str, str]:
        """``(user CRS, scene CRS)`` of lonlat/world prompts (the constructor made sure both exist)."""
        if self.src_crs is None or self.scene_crs is None:
            raise PromptError(f"{self.source}: prompts in {self.frame_name} need a CRS on both sides")
        return self.src_crs, self.scene_crs

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self.frame == "scene" or len(xy) == 0:
            return xy.copy()
        src, dst = self._crs_pair()
        try:
            world = transform_xy(xy, src, dst)
        except InputError as exc:
            raise PromptError(f"{self.source}: {exc}") from None
        return world_to_pixel(self.transform, world)

    def scene_bounds_text(self) -> str:
        """The scene's extent in the user's frame, for error messages."""
        size = f"{self.cols}x{self.rows} px"
        if self.frame == "scene":
            return f"x 0..{self.cols}, y 0..{self.rows} ({size})"
        outline = pixel_to_world(self.transform, _box_outline(np.array([0.0, 0.0, self.cols, self.rows])))
        src, dst = self._crs_pair()
        try:
            if not crs_equal(dst, src):
                outline = transform_xy(outline, dst, src)
        except InputError:
            return f"{size}, not representable in {self.frame_name}"
        (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
        return f"x {_fmt(x0)}..{_fmt(x1)}, y {_fmt(y0)}..{_fmt(y1)} in {self.frame_name} ({size})"


def _valid_at(valid_mask: ValidMask, window: Window) -> np.ndarray:
    if callable(valid_mask):
        return np.asarray(valid_mask(window), dtype=bool)
    return np.asarray(valid_mask[window.slices()], dtype=bool)


def to_scene_pixels(
    prompts: Prompts,
    scene_crs: str | None,
    scene_transform: Affine,
    shape: tuple[int, int],
    valid_mask: ValidMask | None = None,
    source: str = "the scene",
) -> Prompts:
    """Prompts in ``scene``/``lonlat``/``world`` frame -> the same prompts in scene pixels.

    ``scene_crs`` and ``scene_transform`` describe the scene (``crs`` ``None`` for plain
    images); ``shape`` is ``(rows, cols)``; ``valid_mask`` is a scene-sized bool array or
    a function ``Window -> bool array`` (e.g. ``scene.valid_mask``) used to reject
    prompts on nodata; ``source`` names the scene in messages. World prompts with
    ``crs`` ``None`` are taken to be in the scene CRS.

    Returns ``Prompts(frame="scene", crs=None)`` with points ``(N, 2)`` and boxes
    ``(M, 4)`` float64 pixel coordinates; labels, prior mask and text unchanged.
    Raises :class:`PromptError` for world/lonlat prompts on a scene without CRS, points
    outside the scene or on nodata, boxes entirely outside or covering only nodata.
    """
    conv = _Converter(prompts, scene_crs, scene_transform, shape, source)
    rows, cols = conv.rows, conv.cols
    if isinstance(valid_mask, np.ndarray) and valid_mask.shape != (rows, cols):
        raise InputError(f"valid mask has shape {valid_mask.shape}, the scene is {rows}x{cols} (rows x cols)")

    points = conv.to_pixels(prompts.points)
    for i, ((px, py), (ux, uy)) in enumerate(zip(points, prompts.points, strict=True)):
        label = "object" if prompts.labels[i] == 1 else "background"
        where = f"{label} point ({_fmt(ux)}, {_fmt(uy)}) in {conv.frame_name}"
        if not (0 <= px < cols and 0 <= py < rows):
            pixel = "" if conv.frame == "scene" else f" (pixel {px:.1f}, {py:.1f})"
            raise PromptError(f"{where}{pixel} is outside {source}: {conv.scene_bounds_text()}")
        if valid_mask is not None:
            col, row = int(math.floor(px)), int(math.floor(py))
            if not _valid_at(valid_mask, Window(col, row, 1, 1)).all():
                raise PromptError(f"{where} lies on nodata in {source} (pixel column {col}, row {row})")

    boxes = np.zeros((len(prompts.boxes), 4), dtype=np.float64)
    for i, box in enumerate(prompts.boxes):
        outline = conv.to_pixels(_box_outline(box) if conv.frame != "scene" else box.reshape(2, 2))
        (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
        where = f"box ({', '.join(_fmt(v) for v in box)}) in {conv.frame_name}"
        if x1 <= 0 or y1 <= 0 or x0 >= cols or y0 >= rows:
            raise PromptError(f"{where} is outside {source}: {conv.scene_bounds_text()}")
        clipped = np.array([max(x0, 0.0), max(y0, 0.0), min(x1, float(cols)), min(y1, float(rows))])
        if not np.allclose(clipped, [x0, y0, x1, y1]):
            log.warning("%s: %s extends beyond the scene; clipped to pixels %s", source, where, clipped.round(2).tolist())
        if valid_mask is not None:
            c0, r0 = int(math.floor(clipped[0])), int(math.floor(clipped[1]))
            c1, r1 = min(cols, int(math.ceil(clipped[2]))), min(rows, int(math.ceil(clipped[3])))
            window = Window.from_bounds(c0, r0, max(c1, c0 + 1), max(r1, r0 + 1))
            if not callable(valid_mask) or window.area <= MAX_BOX_CHECK_PIXELS:
                if not _valid_at(valid_mask, window).any():
                    raise PromptError(f"{where} covers only nodata in {source}")
        boxes[i] = clipped

    return replace(prompts, points=points, boxes=boxes, frame="scene", crs=None)


def to_tile_pixels(prompts: Prompts, window: Window, outside: str = "error") -> Prompts:
    """Scene-pixel prompts -> pixels of the tile ``window`` (its offset subtracted).

    ``outside``: ``"error"`` raises :class:`PromptError` for a point outside the window or
    a box not overlapping it; ``"drop"`` leaves those out (for a tile that sees only some
    of a scene's prompts). Boxes partly outside the window are clipped to it.
    Returns ``Prompts(frame="tile")``; labels, prior mask and text unchanged.
    """
    if prompts.frame != "scene":
        raise PromptError(f"to_tile_pixels needs prompts in scene pixels, got frame {prompts.frame!r}")
    if outside not in ("error", "drop"):
        raise InputError(f"outside must be 'error' or 'drop', got {outside!r}")
    offset = np.array([window.col_off, window.row_off], dtype=np.float64)
    w, h = float(window.width), float(window.height)
    points = prompts.points - offset
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    if outside == "error" and not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        x, y = prompts.points[i]
        raise PromptError(f"point ({_fmt(x)}, {_fmt(y)}) in scene pixels is outside tile {window.to_dict()}")
    boxes = prompts.boxes - np.concatenate([offset, offset])
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w) & (boxes[:, 1] < h)
    if outside == "error" and not keep.all():
        i = int(np.flatnonzero(~keep)[0])
        raise PromptError(
            f"box ({', '.join(_fmt(v) for v in prompts.boxes[i])}) in scene pixels does not overlap tile {window.to_dict()}"
        )
    boxes = boxes[keep]
    if len(boxes):
        boxes = np.stack(
            [np.maximum(boxes[:, 0], 0), np.maximum(boxes[:, 1], 0), np.minimum(boxes[:, 2], w), np.minimum(boxes[:, 3], h)],
            axis=1,
        )
    return replace(
        prompts, points=points[inside], labels=prompts.labels[inside], boxes=boxes, frame="tile", crs=None
    )
