"""The standard interactive-segmentation click simulator, on the backend protocol.

Protocol (RITM, Sofiiuk et al. 2022; used by SAM, SimpleClick, FocalClick for NoC):

1. The first click is placed at the interior point of the object farthest from its
   boundary (maximum of the Euclidean distance transform; the image edge and ignored
   pixels count as boundary), labelled 1 (object).
2. After each prediction the error regions are false negatives (labelled, not predicted)
   and false positives (predicted, not labelled), ignored pixels excluded. The next click
   goes to the point farthest inside the *largest* error region, labelled 1 for a false
   negative and 0 for a false positive. "Largest" is, by default, the deepest region
   (``region="deepest"``: the one whose farthest-inside point is farthest from its edge,
   exactly RITM's rule, so NoC is comparable with published numbers); ``region="area"``
   takes the connected error region with the most pixels instead. As in RITM's
   ``Clicker`` (its ``not_clicked_map``), a pixel already clicked is never clicked again:
   when a model ignores a click, the next one goes to the next-deepest error pixel.
3. Every click is sent with all earlier clicks, plus the previous best prediction's
   ``low_res_logits`` as the prior mask (when the backend returns them).
4. Multimask policy ``"first"`` (SAM's evaluation): the first click asks for several
   candidates and keeps the highest-scoring one; later clicks ask for a single mask.
   ``"always"`` / ``"never"`` are also accepted.
5. The simulation stops at ``max_clicks`` (20) or as soon as the IoU reaches ``stop_iou``
   (0.90) or the prediction has no error left on a pixel not clicked yet.

Click coordinates are integer pixel indices ``(x=col, y=row)`` (RITM/SAM evaluation
code passes integers); under terramask's frame convention that is the upper-left corner
of the clicked pixel, which every backend maps back to that pixel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terramask.core.errors import InputError
from terramask.core.prompts import Prompts
from terramask.eval.metrics import check_masks, confusion

log = logging.getLogger(__name__)

REGIONS = ("deepest", "area")
MULTIMASK = ("first", "always", "never")


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel ``x`` (col), ``y`` (row), ``label`` 1 object / 0 background."""

    x: int
    y: int
    label: int
    depth: float = 0.0  # distance of the click to the edge of its error region (pixels)


@dataclass
class ClickTrace:
    """What one simulation did.

    ``ious[i]`` is the IoU after click ``i + 1``; ``points (K, 2)`` and ``labels (K,)`` the
    clicks; ``mask`` the final prediction ``(H, W)`` bool; ``first_mask`` the prediction
    after the first click; ``stopped`` why it ended: ``"stop_iou"``, ``"perfect"`` or
    ``"max_clicks"``.
    """

    ious: list[float] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    mask: np.ndarray | None = None
    first_mask: np.ndarray | None = None
    stopped: str = ""

    @property
    def n_clicks(self) -> int:
        return len(self.ious)

    @property
    def final_iou(self) -> float:
        return self.ious[-1] if self.ious else 0.0


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of ``region`` to the nearest pixel outside it,
    the image edge counting as outside (``0`` off the region)."""
    import cv2

    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def _deepest_point(region: np.ndarray, clicked: np.ndarray | None = None) -> tuple[int, int, float] | None:
    """``(x, y, depth)`` of the pixel of ``region`` farthest from its edge, skipping
    ``clicked`` pixels (None when every region pixel was clicked already)."""
    dist = _distance_inside(region)
    if clicked is not None:
        dist[clicked] = 0.0
    flat = int(np.argmax(dist))  # first maximum in raster order: deterministic
    y, x = divmod(flat, region.shape[1])
    if dist[y, x] <= 0.0:
        return None
    return int(x), int(y), float(dist[y, x])


def _largest_component(region: np.ndarray) -> np.ndarray:
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(region)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return lab == best


def next_click(pred, gt, ignore=None, region: str = "deepest", clicked: np.ndarray | None = None) -> Click | None:
    """The next simulated click for prediction ``pred`` of label ``gt`` (``(H, W)`` bool),
    or ``None`` when there is no error left (outside the ``clicked`` pixels, ``(H, W)``
    bool, which are never clicked again). An empty ``pred`` gives the first click."""
    if region not in REGIONS:
        raise InputError(f"unknown error-region rule {region!r}; use one of {', '.join(REGIONS)}")
    pred, gt, ignore = check_masks(pred, gt, ignore)
    valid = ~ignore if ignore is not None else np.ones_like(gt)
    fn = gt & ~pred & valid
    fp = pred & ~gt & valid
    if region == "deepest":
        candidates = []
        for err, lab in ((fn, 1), (fp, 0)):
            point = _deepest_point(err, clicked) if err.any() else None
            if point is not None:
                candidates.append((*point, lab))
        if not candidates:
            return None
        # RITM: positive only when the false-negative region is strictly deeper.
        if len(candidates) == 2:
            x, y, d, label = candidates[0] if candidates[0][2] > candidates[1][2] else candidates[1]
        else:
            x, y, d, label = candidates[0]
        return Click(x, y, label, d)
    fn_c, fp_c = _largest_component(fn), _largest_component(fp)
    n_fn, n_fp = int(fn_c.sum()), int(fp_c.sum())
    if n_fn == 0 and n_fp == 0:
        return None
    comp, label = (fn_c, 1) if n_fn >= n_fp else (fp_c, 0)
    point = _deepest_point(comp, clicked)
    if point is None:
        return None
    x, y, d = point
    return Click(x, y, label, d)


def _low_res(result, index: int) -> np.ndarray | None:
    if "low_res_logits" not in result:
        return None
    logits = np.asarray(result["low_res_logits"][index], dtype=np.float32)
    return logits[None] if logits.ndim == 2 else logits


def simulate_clicks(
    backend: Any,
    embedding: Any,
    gt: np.ndarray,
    ignore: np.ndarray | None = None,
    *,
    max_clicks: int = 20,
    stop_iou: float | None = 0.90,
    multimask: str = "first",
    use_prior: bool = True,
    region: str = "deepest",
) -> ClickTrace:
    """Run the click simulator for one labelled object.

    ``backend`` follows :class:`terramask.models.base.Backend`; ``embedding`` is what its
    ``set_image`` returned for the image (computed once per image by the caller).
    ``gt``/``ignore``: ``(H, W)`` bool on that image's grid. ``stop_iou=None`` always runs
    ``max_clicks`` clicks. Returns a :class:`ClickTrace`.
    """
    if max_clicks < 1:
        raise InputError(f"max_clicks must be >= 1, got {max_clicks}")
    if stop_iou is not None and not 0.0 < stop_iou <= 1.0:
        raise InputError(f"stop_iou must be in (0, 1], got {stop_iou}")
    if multimask not in MULTIMASK:
        raise InputError(f"unknown multimask policy {multimask!r}; use one of {', '.join(MULTIMASK)}")
    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros_like(gt)
    _, gt, ignore = check_masks(pred, gt, ignore)
    valid_gt = gt if ignore is None else gt & ~ignore
    if not valid_gt.any():
        raise InputError("the labelled object has no valid pixels to click on")
    trace = ClickTrace()
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    prior: np.ndarray | None = None
    clicked = np.zeros_like(gt)
    for k in range(max_clicks):
        click = next_click(pred, gt, ignore, region=region, clicked=clicked)
        if click is None:
            trace.stopped = "perfect"
            break
        clicked[click.y, click.x] = True
        points.append((click.x, click.y))
        labels.append(click.label)
        multi = multimask == "always" or (multimask == "first" and k == 0)
        prompts = Prompts(
            points=np.asarray(points, dtype=np.float64),
            labels=np.asarray(labels, dtype=np.int64),
            mask_logits=prior if use_prior else None,
        )
        result = backend.predict(embedding, prompts, multimask=multi)
        if len(result) == 0:
            pred = np.zeros_like(gt)
            prior = None
        else:
            best = int(np.argmax(result.scores))
            pred = np.asarray(result.masks[best], dtype=bool)
            if pred.shape != gt.shape:
                raise InputError(f"backend returned a mask of grid {pred.shape}; the label grid is {gt.shape}")
            prior = _low_res(result, best)
        trace.ious.append(confusion(pred, gt, ignore).iou)
        if k == 0:
            trace.first_mask = pred
        if stop_iou is not None and trace.ious[-1] >= stop_iou:
            trace.stopped = "stop_iou"
            break
    else:
        trace.stopped = "max_clicks"
    trace.points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    trace.labels = np.asarray(labels, dtype=np.int64)
    trace.mask = pred
    return trace


def tight_box(mask: np.ndarray) -> np.ndarray:
    """``(4,)`` float64 xyxy box enclosing the pixels of ``mask`` ``(H, W)`` bool.

    In terramask's frame convention (``(0, 0)`` = upper-left corner of the upper-left
    pixel) the tight box of pixels ``cols x0..x1``, ``rows y0..y1`` is
    ``[x0, y0, x1 + 1, y1 + 1]``; a one-pixel object gets a 1x1 box, never a degenerate one.
    """
    mask = np.asarray(mask, dtype=bool)
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if not ys.size:
        raise InputError("cannot box an empty mask")
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float64)


def box_prediction(backend: Any, embedding: Any, gt: np.ndarray) -> np.ndarray:
    """Box protocol: the tight box of ``gt`` as the only prompt, single-mask output.
    Returns the predicted ``(H, W)`` bool mask."""
    gt = np.asarray(gt, dtype=bool)
    result = backend.predict(embedding, Prompts(boxes=tight_box(gt)[None]), multimask=False)
    if len(result) == 0:
        return np.zeros_like(gt)
    best = int(np.argmax(result.scores))
    pred = np.asarray(result.masks[best], dtype=bool)
    if pred.shape != gt.shape:
        raise InputError(f"backend returned a mask of grid {pred.shape}; the label grid is {gt.shape}")
    return pred
