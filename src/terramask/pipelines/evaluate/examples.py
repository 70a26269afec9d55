"""Best and worst examples kept for the report: small crops of image, label and prediction.

:class:`ExampleKeeper` keeps the ``n`` best and ``n`` worst in bounded memory;
:func:`make_example` crops around the object (or keeps the whole image) and resamples by
an integer factor so the longest side is close to :data:`EXAMPLE_SIDE`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from terramask.eval.datasets import Sample

EXAMPLE_SIDE = 256  # longest side of the crops kept for the report (pixels)


@dataclass
class Example:
    """A small crop kept for the report: the image, the label, the prediction and the prompts.

    ``image (h, w, 3)`` uint8, ``gt``/``pred``/``ignore`` ``(h, w)`` bool, ``points (K, 2)``
    and ``box (4,)`` in crop pixels (after the same downscale as the crop), ``score`` the
    value examples are ranked by (IoU), ``title`` a short description.
    """

    stem: str
    score: float
    title: str
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    ignore: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: np.ndarray | None = None
    pred_labels: np.ndarray | None = None  # auto mode: (h, w) int32 ids of the predicted masks
    gt_labels: np.ndarray | None = None  # auto mode: (h, w) int32 ids of the labelled objects


class ExampleKeeper:
    """Keeps the ``n`` best and ``n`` worst examples seen (bounded memory)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._best: list = []
        self._worst: list = []
        self._count = 0

    def wants(self, score: float) -> bool:
        if self.n == 0:
            return False
        if len(self._best) < self.n or len(self._worst) < self.n:
            return True
        return score > self._best[0][0] or -score > self._worst[0][0]

    def add(self, score: float, make: Callable[[], Example]) -> None:
        if not self.wants(score):
            return
        ex = make()
        self._count += 1
        for heap, key in ((self._best, score), (self._worst, -score)):
            item = (key, -self._count, ex)
            if len(heap) < self.n:
                heapq.heappush(heap, item)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, item)

    @property
    def best(self) -> list[Example]:
        return [ex for _, _, ex in sorted(self._best, key=lambda t: (-t[0], -t[1]))]

    @property
    def worst(self) -> list[Example]:
        return [ex for _, _, ex in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]


def _crop_box(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` around the union of masks with a 25 % + 8 px margin."""
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        union |= m
    ys, xs = np.nonzero(union)
    if not ys.size:
        return 0, shape[0], 0, shape[1]
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int(0.25 * (y1 - y0)) + 8, int(0.25 * (x1 - x0)) + 8
    return max(y0 - my, 0), min(y1 + my, shape[0]), max(x0 - mx, 0), min(x1 + mx, shape[1])


def _resample(arr: np.ndarray, step: int, up: int) -> np.ndarray:
    """Keep every ``step``-th pixel, then repeat each pixel ``up`` times (nearest neighbour)."""
    if step > 1:
        arr = arr[::step, ::step]
    if up > 1:
        arr = np.repeat(np.repeat(arr, up, axis=0), up, axis=1)
    return np.ascontiguousarray(arr)


def make_example(
    sample: Sample,
    stem: str,
    score: float,
    title: str,
    gt: np.ndarray,
    pred: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    whole: bool = False,
    pred_labels: np.ndarray | None = None,
    gt_labels: np.ndarray | None = None,
) -> Example:
    """Crop around ``gt`` and ``pred`` (or keep the whole image), resampled by an integer
    factor so the longest side is close to :data:`EXAMPLE_SIDE` (at most that when
    shrinking, nearest neighbour when enlarging small objects)."""
    shape = gt.shape
    y0, y1, x0, x1 = (0, shape[0], 0, shape[1]) if whole else _crop_box([gt, pred], shape)
    side = max(y1 - y0, x1 - x0)
    step = max(1, int(np.ceil(side / EXAMPLE_SIDE)))
    up = max(1, EXAMPLE_SIDE // side) if step == 1 else 1
    sl = (slice(y0, y1), slice(x0, x1))
    # points are pixel indices: drawn on the centre of the enlarged pixel block
    pts = np.zeros((0, 2)) if points is None else (np.asarray(points, dtype=np.float64) - [x0, y0]) / step * up + (up - 1) / 2
    bx = None if box is None else (np.asarray(box, dtype=np.float64) - [x0, y0, x0, y0]) / step * up
    return Example(
        stem=stem,
        score=float(score),
        title=title,
        image=_resample(sample.image[sl], step, up),
        gt=_resample(gt[sl], step, up),
        pred=_resample(pred[sl], step, up),
        ignore=_resample(sample.ignore[sl], step, up),
        points=pts,
        labels=np.zeros((0,), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64),
        box=bx,
        pred_labels=None if pred_labels is None else _resample(pred_labels[sl], step, up),
        gt_labels=None if gt_labels is None else _resample(gt_labels[sl], step, up),
    )
