"""Overlay pictures: masks, prompts and objects drawn over a scene (numpy + OpenCV).

All functions take the ``(H, W, 3)`` ``uint8`` RGB picture of a scene (``GeoImage.to_rgb8``)
and return a new ``uint8`` RGB array at the picture's own resolution (panels and
galleries put several side by side). Colours follow the reference notebook: masks in
dodger blue at 60 % opacity, object points as green stars and background points as red
stars with a white edge, boxes as green rectangles, automatic results in random colours
at 35 % opacity. Coordinates are scene pixels ``(x=col, y=row)``; a point ``(x, y)``
is drawn centred on pixel ``(row=y, col=x)`` like ``matplotlib.imshow``.

Drawing touches only the pixels concerned (bounding boxes of masks, one label image
for thousands of objects), so it stays fast on large pictures.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from terramask.core.errors import InputError, OutputError
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.io.atomic import write_bytes

log = logging.getLogger(__name__)

OBJECT_COLOR = (0, 128, 0)
"""Object (label 1) points: matplotlib's ``green``, as in the reference notebook."""
BACKGROUND_COLOR = (255, 0, 0)
"""Background (label 0) points: ``red``."""
BOX_COLOR = (0, 128, 0)
MASK_COLOR = (30, 144, 255)
"""First mask colour, the notebook's ``show_mask`` blue."""
MASK_ALPHA = 0.6
ANNOTATION_ALPHA = 0.35
EDGE_COLOR = (255, 255, 255)
# Further masks of one picture (after MASK_COLOR).
_PALETTE = [(255, 140, 0), (186, 85, 211), (255, 215, 0), (0, 206, 209), (220, 20, 60), (50, 205, 50)]


def _cv2():
    import cv2

    return cv2


# -- input checks -----------------------------------------------------------------------
def _rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"overlay picture must be uint8 RGB (use GeoImage.to_rgb8), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    else:
        raise InputError(f"overlay picture must be (H, W, 3), got shape {arr.shape}")
    return np.ascontiguousarray(arr).copy()


def _masks(masks, shape: tuple[int, int]) -> np.ndarray:
    if masks is None:
        return np.zeros((0, *shape), dtype=bool)
    arr = masks.masks if isinstance(masks, MaskSet) else np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != tuple(shape):
        raise InputError(f"masks of shape {arr.shape} do not match the {shape[0]}x{shape[1]} picture")
    return arr.astype(bool, copy=False)


def _scale(shape: tuple[int, int]) -> float:
    """Drawing scale: 1.0 for a 1024 px picture."""
    return max(shape) / 1024.0


def _thickness(shape: tuple[int, int], base: float = 2.0) -> int:
    return max(1, int(round(base * _scale(shape))))


# -- primitives -------------------------------------------------------------------------
def _bbox_slices(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _tint(img: np.ndarray, mask: np.ndarray, color, alpha: float, contour: bool) -> None:
    """Blend ``color`` into ``img`` where ``mask``, in place, within the mask's box."""
    sl = _bbox_slices(mask)
    if sl is None:
        return
    region = img[sl]
    m = mask[sl]
    blended = region[m].astype(np.float32) * (1.0 - alpha) + np.asarray(color, np.float32) * alpha
    region[m] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if contour:
        cv2 = _cv2()
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        offset = (int(sl[1].start), int(sl[0].start))
        t = _thickness(img.shape[:2], 1.5)
        cv2.drawContours(img, contours, -1, EDGE_COLOR, t, cv2.LINE_AA if t > 2 else cv2.LINE_8, offset=offset)


def marker_radius(shape: tuple[int, int]) -> int:
    """Outer radius in pixels of the point stars for a picture of ``shape``."""
    return max(7, int(round(16 * _scale(shape))))


def _star(cx: float, cy: float, r: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return np.round(pts * 16).astype(np.int32)  # 4 fractional bits for cv2's shift=4


def draw_points(img: np.ndarray, points, labels, *, radius: int | None = None) -> np.ndarray:
    """Stars at ``(N, 2)`` pixel points, in place: green for label 1, red for label 0."""
    cv2 = _cv2()
    pts = np.asarray(points if points is not None else np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)
    labs = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if len(labs) != len(pts):
        raise InputError(f"{len(pts)} points but {len(labs)} labels")
    r = radius or marker_radius(img.shape[:2])
    edge = max(1, int(round(r / 10)))
    for (x, y), lab in zip(pts, labs, strict=True):
        star = _star(float(x), float(y), r)
        color = OBJECT_COLOR if int(lab) == 1 else BACKGROUND_COLOR
        cv2.fillPoly(img, [star], color, cv2.LINE_AA, shift=4)
        cv2.polylines(img, [star], True, EDGE_COLOR, edge, cv2.LINE_AA, shift=4)
    return img


def draw_boxes(img: np.ndarray, boxes, *, color=BOX_COLOR) -> np.ndarray:
    """Rectangles for ``(M, 4)`` xyxy pixel boxes, in place."""
    cv2 = _cv2()
    bxs = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
    t = max(2, _thickness(img.shape[:2], 2.5))
    for x0, y0, x1, y1 in bxs:
        # Axis-aligned: crisp edges in the exact colour, no antialiasing needed.
        cv2.rectangle(img, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), color, t, cv2.LINE_8)
    return img


def _text_size(shape: tuple[int, int]) -> tuple[float, int]:
    scale = max(0.45, 0.8 * _scale(shape))
    return scale, max(1, int(round(scale * 2)))


def draw_text(img: np.ndarray, text: str, *, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """White text on a dark box at ``origin`` (top-left, pixels), in place."""
    cv2 = _cv2()
    scale, thick = _text_size(img.shape[:2])
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, th // 3)
    x0, y0 = origin
    x1, y1 = min(img.shape[1], x0 + tw + 2 * pad), min(img.shape[0], y0 + th + base + 2 * pad)
    region = img[y0:y1, x0:x1]
    region[:] = (region.astype(np.float32) * 0.4).astype(np.uint8)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, EDGE_COLOR, thick, cv2.LINE_AA)
    return img


def _prompt_args(points, labels, boxes):
    if isinstance(points, Prompts):
        if points.frame != "scene":
            raise InputError(f"overlay prompts must be in scene pixels, got frame {points.frame!r}")
        return points.points, points.labels, points.boxes if boxes is None else boxes
    return points, labels, boxes


# -- public pictures --------------------------------------------------------------------
def draw_prompted(rgb8: np.ndarray, masks=None, points=None, labels=None, boxes=None,
                  score_text: str | None = None, *, alpha: float = MASK_ALPHA, contour: bool = True) -> np.ndarray:
    """The scene with prompted masks, points and boxes, like the notebook's figures.

    ``masks``: ``(H, W)`` bool, ``(K, H, W)`` stack or :class:`MaskSet` — every mask is
    tinted (first in :data:`MASK_COLOR`) with a white contour. ``points`` ``(N, 2)`` pixel
    ``(x, y)`` with ``labels`` (1 object -> green star, 0 background -> red star), or a
    scene-frame :class:`Prompts` (its boxes are used unless ``boxes`` is given).
    ``boxes`` ``(M, 4)`` xyxy -> green rectangles. ``score_text`` is written top-left.
    Returns a new ``(H, W, 3)`` uint8 array.
    """
    img = _rgb(rgb8)
    shape = img.shape[:2]
    points, labels, boxes = _prompt_args(points, labels, boxes)
    for k, mask in enumerate(_masks(masks, shape)):
        color = MASK_COLOR if k == 0 else _PALETTE[(k - 1) % len(_PALETTE)]
        _tint(img, mask, color, alpha, contour)
    draw_boxes(img, boxes)
    draw_points(img, points, labels)
    if score_text:
        draw_text(img, score_text)
    return img


def _title_band(width: int, text: str, shape: tuple[int, int]) -> np.ndarray:
    cv2 = _cv2()
    scale, thick = _text_size(shape)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    height = th + base + 2 * max(4, th // 2)
    band = np.full((height, width, 3), 255, dtype=np.uint8)
    x = max(0, (width - tw) // 2)
    cv2.putText(band, text, (x, height - base - max(4, th // 2) + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), thick, cv2.LINE_AA)
    return band


def draw_candidates(rgb8: np.ndarray, masks, scores: Sequence[float] | None = None, points=None, labels=None,
                    boxes=None, *, gap: int | None = None, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Candidate masks side by side, each titled ``"Mask k, Score: 0.980"``.

    ``masks``: ``(K, H, W)`` or :class:`MaskSet` (its scores are used when ``scores`` is
    None). Each panel is :func:`draw_prompted` at full resolution with the same prompts;
    panels are separated by ``gap`` white pixels. Returns ``(H + title, K*W + gaps, 3)``.
    """
    img = _rgb(rgb8)
    shape = img.shape[:2]
    stack = _masks(masks, shape)
    if len(stack) == 0:
        raise InputError("no candidate masks to draw")
    if scores is not None:
        score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    elif isinstance(masks, MaskSet):
        score_arr = np.asarray(masks.scores, dtype=np.float64).reshape(-1)
    else:
        score_arr = np.full(len(stack), np.nan)
    if len(score_arr) != len(stack):
        raise InputError(f"{len(stack)} candidate masks but {len(score_arr)} scores")
    gap = _thickness(shape, 16) if gap is None else int(gap)
    panels = []
    for k, mask in enumerate(stack):
        panel = draw_prompted(img, mask, points, labels, boxes, alpha=alpha)
        title = f"Mask {k + 1}, Score: {score_arr[k]:.3f}"
        panels.append(np.concatenate([_title_band(panel.shape[1], title, shape), panel], axis=0))
        if k < len(stack) - 1 and gap > 0:
            panels.append(np.full((panels[-1].shape[0], gap, 3), 255, dtype=np.uint8))
    return np.concatenate(panels, axis=1)


def id_colors(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-random RGB colours for integer object IDs: ``(...,) -> (..., 3)`` uint8.

    A hash of (id, seed), so an object has the same colour in every window or tile of
    a scene and in every run.
    """
    x = np.asarray(ids).astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)], axis=-1)
    return rgb.astype(np.uint8)


def draw_annotations(rgb8: np.ndarray, masks, alpha: float = ANNOTATION_ALPHA, seed: int = 0, *,
                     borders: bool = False) -> np.ndarray:
    """All objects in random colours at ``alpha`` opacity, like the notebook's ``show_anns``.

    ``masks``: :class:`MaskSet`, ``(N, H, W)`` bool, or an ``(H, W)`` integer label image
    (0 = background; e.g. a window of ``labels.tif``). Masks become one label image
    painted largest first, so where objects overlap the smallest one shows (the notebook
    stacks translucent layers instead; this draws thousands of masks in one pass).
    Colours depend only on the object's ID (its 1-based index) and ``seed``. With
    ``borders`` object edges are drawn in their colour at full opacity.
    """
    img = _rgb(rgb8)
    shape = img.shape[:2]
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be within [0, 1], got {alpha}")
    arr = masks.masks if isinstance(masks, MaskSet) else np.asarray(masks)
    if arr.ndim == 2 and arr.dtype != bool:
        if arr.shape != shape:
            raise InputError(f"label image of shape {arr.shape} does not match the {shape[0]}x{shape[1]} picture")
        if arr.dtype.kind not in "ui":
            raise InputError(f"label image must hold integers, got dtype {arr.dtype}")
        labels = arr
    else:
        from terramask.io.rasters import labels_from_maskset

        labels = labels_from_maskset(_masks(arr, shape))
    fg = labels > 0
    if not fg.any():
        return img
    top = int(labels.max())
    if top < (1 << 22):
        colors = id_colors(np.arange(top + 1), seed)[labels[fg]]
    else:
        colors = id_colors(labels[fg], seed)
    img[fg] = np.clip(img[fg].astype(np.float32) * (1 - alpha) + colors.astype(np.float32) * alpha + 0.5,
                      0, 255).astype(np.uint8)
    if borders:
        edge = np.zeros(shape, dtype=bool)
        diff_x = labels[:, 1:] != labels[:, :-1]
        diff_y = labels[1:, :] != labels[:-1, :]
        edge[:, 1:] |= diff_x
        edge[:, :-1] |= diff_x
        edge[1:, :] |= diff_y
        edge[:-1, :] |= diff_y
        edge &= fg
        img[edge] = id_colors(labels[edge], seed)
    return img


CLASS_COLORS = [(255, 225, 25), (70, 240, 240), (240, 50, 230), (60, 180, 75), (245, 130, 48), (0, 130, 200),
                (230, 25, 75), (145, 30, 180), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
"""Colours of classes 1, 2, … in class pictures (a qualitative palette; repeats after 12)."""


def class_color(index: int) -> tuple[int, int, int]:
    """RGB colour of 1-based class ``index``."""
    return CLASS_COLORS[(int(index) - 1) % len(CLASS_COLORS)]


def draw_classes(rgb8: np.ndarray, classes: np.ndarray, names: Sequence[str], labels: np.ndarray | None = None,
                 alpha: float = 0.5) -> np.ndarray:
    """Objects coloured by class with a legend (``terramask find``'s overlay).

    ``classes``: ``(H, W)`` integer class index (0 = none; ``k`` is ``names[k - 1]``, e.g.
    a window of ``classes.tif``) tinted in :func:`class_color` at ``alpha``; ``labels``
    (optional ``(H, W)`` object IDs) draws object edges in their class colour, so touching
    objects of one class stay apart. The legend (one swatch and name per class, with its
    pixel count in the picture) is drawn top-left. Returns a new ``(H, W, 3)`` uint8 array.
    """
    img = _rgb(rgb8)
    shape = img.shape[:2]
    classes = np.asarray(classes)
    if classes.shape != shape or classes.dtype.kind not in "ui":
        raise InputError(f"class image must be integers of the picture's shape {shape}, got {classes.dtype} {classes.shape}")
    palette = np.array([(0, 0, 0)] + [class_color(k) for k in range(1, len(names) + 1)], dtype=np.float32)
    fg = (classes > 0) & (classes <= len(names))
    img[fg] = np.clip(img[fg] * (1 - alpha) + palette[classes[fg]] * alpha + 0.5, 0, 255).astype(np.uint8)
    if labels is not None:
        lab = np.asarray(labels)
        edge = np.zeros(shape, dtype=bool)
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        edge &= fg
        img[edge] = palette[classes[edge]].astype(np.uint8)
    _legend(img, names)
    return img


def _legend(img: np.ndarray, names: Sequence[str]) -> None:
    """One row per class (swatch + name) on a dark box at the top-left, in place."""
    if not names:
        return
    cv2 = _cv2()
    scale, thick = _text_size(img.shape[:2])
    sizes = [cv2.getTextSize(str(n), cv2.FONT_HERSHEY_SIMPLEX, scale, thick) for n in names]
    row = max(th + base for (_, th), base in sizes) + 4
    pad = max(3, row // 4)
    width = min(img.shape[1], max(tw for (tw, _), _ in sizes) + row + 3 * pad)
    height = min(img.shape[0], len(names) * row + 2 * pad)
    region = img[:height, :width]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)
    for k, name in enumerate(names):
        y = pad + k * row
        cv2.rectangle(img, (pad, y + 2), (pad + row - 6, y + row - 4), class_color(k + 1), -1)
        cv2.putText(img, str(name), (2 * pad + row - 4, y + row - sizes[k][1] - 2), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, EDGE_COLOR, thick, cv2.LINE_AA)


# -- files ---------------------------------------------------------------------------
def png_bytes(image: np.ndarray, compression: int = 3) -> bytes:
    """``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 -> PNG bytes (the one
    PNG encoder: files here, HTTP responses in :mod:`terramask.web`).

    ``compression`` is zlib's level 0-9. Raises :class:`InputError` for another dtype or shape.
    """
    cv2 = _cv2()
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(f"PNG picture must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise OutputError(f"cannot encode a {arr.shape} picture as PNG")
    return buf.tobytes()


def save_png(path: str | os.PathLike, rgb8: np.ndarray, *, compression: int = 3) -> Path:
    """Write an ``(H, W)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array as PNG, atomically."""
    return write_bytes(path, png_bytes(rgb8, compression))
