"""Streaming accumulators: ``update`` per object or image, ``compute`` at the end.

They keep sums, counts and fixed-bin histograms only (never masks or per-object lists),
so a dataset of any size is evaluated in constant memory; ``merge`` combines
accumulators filled in parallel. ``compute`` returns plain JSON-friendly dicts.

Conventions (also written into every ``compute`` result):

- NoC@t (number of clicks to reach IoU ``t``): the 1-based index of the first click whose
  IoU is >= ``t``; an object that never reaches ``t`` within ``max_clicks`` counts as
  ``max_clicks`` (the RITM / SAM convention) and is also counted in ``nof`` (failures).
- mIoU@k: the mean IoU after ``k`` clicks. A simulation that stopped early (it reached its
  stop IoU, or the prediction matched the label exactly) carries its last IoU forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from terramask.core.errors import InputError
from terramask.eval.metrics import Confusion, MaskScores

HIST_BINS = 20


def _hist(values: Iterable[float]) -> np.ndarray:
    values = np.clip(np.asarray(list(values), dtype=np.float64), 0.0, 1.0)
    return np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))[0].astype(np.int64)


def hist_edges() -> list[float]:
    """The ``HIST_BINS + 1`` bin edges of every IoU histogram: ``[0, 0.05, ..., 1]``."""
    return np.linspace(0.0, 1.0, HIST_BINS + 1).round(6).tolist()


def _mean(total: float, n: int) -> float | None:
    return None if n == 0 else float(total) / n


@dataclass
class MaskAccumulator:
    """Per-mask scores (IoU, precision, recall, F1, boundary F) over many masks.

    ``compute`` gives the mean of each score over masks, the pooled IoU of all pixels
    (``sum tp / sum (tp + fp + fn)``) and a histogram of IoU.
    """

    n: int = 0
    sums: dict = field(default_factory=lambda: {k: 0.0 for k in ("iou", "precision", "recall", "f1", "boundary_f")})
    pooled: Confusion = field(default_factory=lambda: Confusion(0, 0, 0, 0))
    iou_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))
    tolerance: float | None = None

    def update(self, scores: MaskScores) -> None:
        self.n += 1
        for k in self.sums:
            self.sums[k] += float(getattr(scores, k))
        self.pooled = self.pooled + scores.confusion
        self.iou_hist += _hist([scores.iou])
        self.tolerance = scores.tolerance

    def merge(self, other: "MaskAccumulator") -> "MaskAccumulator":
        out = MaskAccumulator(self.n + other.n, {k: self.sums[k] + other.sums[k] for k in self.sums})
        out.pooled = self.pooled + other.pooled
        out.iou_hist = self.iou_hist + other.iou_hist
        out.tolerance = self.tolerance if self.tolerance is not None else other.tolerance
        return out

    def compute(self) -> dict:
        out: dict = {"n_objects": self.n}
        for k, v in self.sums.items():
            out[f"mean_{k}"] = _mean(v, self.n)
        out["pooled_iou"] = self.pooled.iou if self.n else None
        out["boundary_tolerance_px"] = self.tolerance
        out["iou_histogram"] = {"edges": hist_edges(), "counts": self.iou_hist.tolist()}
        return out


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks needed to reach ``threshold`` (``max_clicks`` when never reached)."""
    for i, v in enumerate(ious[:max_clicks]):
        if v >= threshold:
            return i + 1
    return max_clicks


def iou_after(ious: Sequence[float], k: int) -> float:
    """IoU after ``k`` clicks, carrying the last IoU forward after an early stop."""
    if not len(ious):
        raise InputError("an interactive trace needs at least one click")
    return float(ious[min(k, len(ious)) - 1])


@dataclass
class ClickAccumulator:
    """Interactive (click simulator) results over many objects.

    ``update(ious)`` takes the IoU after each click of one object (length 1..max_clicks).
    ``compute`` gives NoC@t and failures for each threshold, mIoU@k for each ``k`` and the
    whole mIoU-vs-clicks curve (k = 1..max_clicks).
    """

    max_clicks: int = 20
    thresholds: tuple[float, ...] = (0.85, 0.90)
    ks: tuple[int, ...] = (1, 3, 5)
    n: int = 0
    clicks_used: int = 0
    noc_sums: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sized in __post_init__
    nof: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    curve_sums: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    final_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))
    first_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.max_clicks < 1:
            raise InputError(f"max_clicks must be >= 1, got {self.max_clicks}")
        for k in self.ks:
            if not 1 <= k <= self.max_clicks:
                raise InputError(f"mIoU@{k} is outside 1..max_clicks ({self.max_clicks})")
        if self.noc_sums.size != len(self.thresholds):
            self.noc_sums = np.zeros(len(self.thresholds), dtype=np.int64)
        if self.nof.size != len(self.thresholds):
            self.nof = np.zeros(len(self.thresholds), dtype=np.int64)
        if self.curve_sums.size != self.max_clicks:
            self.curve_sums = np.zeros(self.max_clicks, dtype=np.float64)

    def update(self, ious: Sequence[float]) -> None:
        ious = [float(v) for v in ious]
        if not 1 <= len(ious) <= self.max_clicks:
            raise InputError(f"a click trace has {len(ious)} clicks; expected 1..{self.max_clicks}")
        self.n += 1
        self.clicks_used += len(ious)
        for i, t in enumerate(self.thresholds):
            c = noc(ious, t, self.max_clicks)
            self.noc_sums[i] += c
            if not any(v >= t for v in ious):
                self.nof[i] += 1
        self.curve_sums += np.array([iou_after(ious, k) for k in range(1, self.max_clicks + 1)])
        self.final_hist += _hist([ious[-1]])
        self.first_hist += _hist([ious[0]])

    def merge(self, other: "ClickAccumulator") -> "ClickAccumulator":
        if (self.max_clicks, self.thresholds, self.ks) != (other.max_clicks, other.thresholds, other.ks):
            raise InputError("cannot merge click accumulators with different settings")
        return ClickAccumulator(
            self.max_clicks,
            self.thresholds,
            self.ks,
            self.n + other.n,
            self.clicks_used + other.clicks_used,
            self.noc_sums + other.noc_sums,
            self.nof + other.nof,
            self.curve_sums + other.curve_sums,
            self.final_hist + other.final_hist,
            self.first_hist + other.first_hist,
        )

    def compute(self) -> dict:
        out: dict = {"n_objects": self.n, "max_clicks": self.max_clicks}
        for i, t in enumerate(self.thresholds):
            tag = _pct(t)
            out[f"noc@{tag}"] = _mean(self.noc_sums[i], self.n)
            out[f"nof@{tag}"] = int(self.nof[i])
        curve = [_mean(v, self.n) for v in self.curve_sums]
        for k in self.ks:
            out[f"miou@{k}"] = curve[k - 1]
        out["miou_curve"] = curve
        out["mean_clicks_used"] = _mean(self.clicks_used, self.n)
        out["first_iou_histogram"] = {"edges": hist_edges(), "counts": self.first_hist.tolist()}
        out["final_iou_histogram"] = {"edges": hist_edges(), "counts": self.final_hist.tolist()}
        out["conventions"] = {
            "noc": f"first click reaching the threshold; {self.max_clicks} when never reached (counted in nof)",
            "miou@k": "mean IoU after k clicks; a simulation that stopped early carries its last IoU forward",
        }
        return out


def _pct(t: float) -> str:
    v = t * 100
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:g}"


@dataclass
class AutoAccumulator:
    """Automatic-generation results over many images.

    ``update(best_ious, n_predicted, covered_px, labelled_px)`` per image: the best IoU of
    each labelled instance with any predicted mask, the number of predicted masks, and
    the labelled (target, not ignored) pixels covered by the union of predictions out of
    all labelled pixels. ``compute``: recall at each IoU threshold (fraction of instances
    whose best IoU reaches it), mean best IoU, predicted objects per image, pooled coverage.
    """

    thresholds: tuple[float, ...] = (0.5, 0.75)
    n_images: int = 0
    n_instances: int = 0
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sized in __post_init__
    best_sum: float = 0.0
    n_predicted: int = 0
    covered_px: int = 0
    labelled_px: int = 0
    best_hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.hits.size != len(self.thresholds):
            self.hits = np.zeros(len(self.thresholds), dtype=np.int64)

    def update(self, best_ious: Sequence[float] | np.ndarray, n_predicted: int, covered_px: int, labelled_px: int) -> None:
        best = np.asarray(best_ious, dtype=np.float64).reshape(-1)
        if covered_px > labelled_px or covered_px < 0 or n_predicted < 0:
            raise InputError(f"inconsistent counts: covered {covered_px} of {labelled_px} px, {n_predicted} predictions")
        self.n_images += 1
        self.n_instances += best.size
        for i, t in enumerate(self.thresholds):
            self.hits[i] += int(np.count_nonzero(best >= t))
        self.best_sum += float(best.sum())
        self.n_predicted += int(n_predicted)
        self.covered_px += int(covered_px)
        self.labelled_px += int(labelled_px)
        self.best_hist += _hist(best)

    def merge(self, other: "AutoAccumulator") -> "AutoAccumulator":
        if self.thresholds != other.thresholds:
            raise InputError("cannot merge automatic accumulators with different thresholds")
        return AutoAccumulator(
            self.thresholds,
            self.n_images + other.n_images,
            self.n_instances + other.n_instances,
            self.hits + other.hits,
            self.best_sum + other.best_sum,
            self.n_predicted + other.n_predicted,
            self.covered_px + other.covered_px,
            self.labelled_px + other.labelled_px,
            self.best_hist + other.best_hist,
        )

    def compute(self) -> dict:
        out: dict = {"n_images": self.n_images, "n_objects": self.n_instances}
        for i, t in enumerate(self.thresholds):
            out[f"recall@{t:g}"] = _mean(self.hits[i], self.n_instances)
        out["mean_best_iou"] = _mean(self.best_sum, self.n_instances)
        out["n_predicted"] = self.n_predicted
        out["predicted_per_image"] = _mean(self.n_predicted, self.n_images)
        out["coverage"] = None if self.labelled_px == 0 else self.covered_px / self.labelled_px
        out["best_iou_histogram"] = {"edges": hist_edges(), "counts": self.best_hist.tolist()}
        out["conventions"] = {
            "best_iou": "per labelled instance, the highest IoU with any predicted mask (not one-to-one)",
            "coverage": "labelled target pixels inside the union of predicted masks / all labelled target pixels",
        }
        return out
