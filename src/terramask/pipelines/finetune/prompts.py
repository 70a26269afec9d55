"""Training prompts for one labelled object, sampled with numpy (no model involved).

- ``clicks``: the click simulator's first click (:func:`terramask.eval.clicks.next_click`
  on an empty prediction: the interior point farthest from the object's edge) half of
  the time, else a random object pixel at least half as deep; then, with probability
  :data:`EXTRA_CLICK_P`, one or two more clicks: positive inside the object or negative
  in a band around it (what the simulator's correction clicks look like). A first
  click alone is, with probability :data:`REFINE_P`, marked ``refine``: the trainer
  then trains the model's own correction round on it (prior mask + second click).
- ``boxes``: the tight box with SAM's jitter: each side moved by noise of standard
  deviation 10 % of the box side, at most :data:`MAX_BOX_NOISE` pixels, clipped to the image.
- ``both``: one or the other with equal probability.

Points are integer pixel indices ``(x=col, y=row)`` as float, like the simulator's
clicks; boxes xyxy in image pixels.
"""

from __future__ import annotations

import numpy as np

from terramask.core.errors import InputError
from terramask.eval.clicks import next_click, tight_box
from terramask.models.finetune.trainable import PromptSample

PROMPT_KINDS = ("clicks", "boxes", "both")
EXTRA_CLICK_P = 0.3
REFINE_P = 0.3
MAX_BOX_NOISE = 20.0
BAND_PX = 8


def sample_prompt(mask: np.ndarray, ignore: np.ndarray | None, kind: str, rng: np.random.Generator) -> PromptSample:
    """A prompt on object ``mask`` ``(H, W)`` bool (``ignore`` pixels never clicked)."""
    if kind not in PROMPT_KINDS:
        raise InputError(f"unknown --prompts {kind!r}; use one of {', '.join(PROMPT_KINDS)}")
    if kind == "both":
        kind = "clicks" if rng.random() < 0.5 else "boxes"
    if kind == "boxes":
        return PromptSample(np.zeros((0, 2)), np.zeros((0,), dtype=np.int64), jittered_box(mask, rng))
    return click_prompt(mask, ignore, rng)


def click_prompt(mask: np.ndarray, ignore: np.ndarray | None, rng: np.random.Generator) -> PromptSample:
    """One to three clicks on ``mask`` (see the module docstring)."""
    valid = mask & ~ignore if ignore is not None else mask
    if not valid.any():
        raise InputError("the labelled object has no valid pixel to click on")
    first = next_click(np.zeros_like(mask), mask, ignore)
    if first is None:
        raise InputError("the labelled object has no valid pixel to click on")
    points = [(first.x, first.y)]
    if rng.random() >= 0.5:
        points = [_random_pixel(valid & (_depth(valid) >= 0.5 * first.depth), rng)]
    labels = [1]
    if rng.random() < EXTRA_CLICK_P:
        for _ in range(int(rng.integers(1, 3))):
            positive = rng.random() < 0.5
            region = valid if positive else _band(mask, ignore)
            if region.any():
                points.append(_random_pixel(region, rng))
                labels.append(1 if positive else 0)
    refine = len(points) == 1 and rng.random() < REFINE_P
    return PromptSample(np.asarray(points, dtype=np.float64), np.asarray(labels, dtype=np.int64), refine=refine)


def jittered_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(4,)`` xyxy: the tight box of ``mask`` with SAM's box noise, inside the image."""
    x0, y0, x1, y1 = tight_box(mask)
    w, h = x1 - x0, y1 - y0
    noise = rng.normal(0.0, 0.1, size=4) * np.array([w, h, w, h])
    box = np.array([x0, y0, x1, y1]) + np.clip(noise, -MAX_BOX_NOISE, MAX_BOX_NOISE)
    rows, cols = mask.shape
    box = np.clip(box, 0, [cols, rows, cols, rows])
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return np.array([x0, y0, x1, y1], dtype=np.float64)
    return box.astype(np.float64)


def _depth(region: np.ndarray) -> np.ndarray:
    import cv2

    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _band(mask: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """Background pixels within :data:`BAND_PX` of the object."""
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * BAND_PX + 1, 2 * BAND_PX + 1), np.uint8)) > 0
    band = grown & ~mask
    return band & ~ignore if ignore is not None else band


def _random_pixel(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(region)
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])
