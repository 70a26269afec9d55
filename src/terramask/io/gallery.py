"""Contact sheets: many pictures (arrays or image files) shrunk into one grid image.

Used for batch and tiled-prompt overviews; drawing primitives live in :mod:`.overlay`.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from terramask.core.errors import InputError, SceneError
from terramask.io.overlay import _cv2, _rgb


def _thumbnail(item, thumb: int) -> np.ndarray:
    cv2 = _cv2()
    if isinstance(item, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(item) as im:
                im.draft("RGB", (thumb, thumb))
                rgb = im.convert("RGB")
                rgb.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
                return np.asarray(rgb, dtype=np.uint8)
        except FileNotFoundError as exc:
            raise SceneError(f"gallery picture {item} does not exist") from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise SceneError(f"cannot read gallery picture {item}: {exc}") from exc
    img = _rgb(item)
    h, w = img.shape[:2]
    f = thumb / max(h, w)
    if f < 1:
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return img


def make_gallery(images: Sequence, cols: int = 5, thumb: int = 256, titles: Sequence[str] | None = None, *,
                 pad: int = 8, background=(255, 255, 255)) -> np.ndarray:
    """A contact sheet: pictures (arrays or image paths) shrunk to fit ``thumb`` px,
    ``cols`` per row, centred in their cells, with optional titles under each.

    Returns an ``(rows*cell_h + pad, cols*cell_w + pad, 3)`` uint8 array.
    """
    cv2 = _cv2()
    images = list(images)
    if not images:
        raise InputError("a gallery needs at least one picture")
    if cols < 1 or thumb < 8:
        raise InputError(f"gallery needs cols >= 1 and thumb >= 8, got cols={cols}, thumb={thumb}")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"{len(images)} pictures but {len(titles)} titles")
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    scale = max(0.35, thumb / 700)
    thick = 1
    title_h = 0
    if titles is not None:
        (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        title_h = th + base + 6
    cell_w, cell_h = thumb + pad, thumb + title_h + pad
    sheet = np.empty((rows * cell_h + pad, cols * cell_w + pad, 3), dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    for i, item in enumerate(images):
        r, c = divmod(i, cols)
        t = _thumbnail(item, thumb)
        y = pad + r * cell_h + (thumb - t.shape[0]) // 2
        x = pad + c * cell_w + (thumb - t.shape[1]) // 2
        sheet[y : y + t.shape[0], x : x + t.shape[1]] = t
        if titles is not None:
            text = str(titles[i])

            def width(s: str) -> int:
                return cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]

            if width(text) > thumb:
                while len(text) > 1 and width(text + "...") > thumb:
                    text = text[:-1]
                text += "..."
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            tx = pad + c * cell_w + max(0, (thumb - tw) // 2)
            ty = pad + r * cell_h + thumb + th + 3
            cv2.putText(sheet, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return sheet
