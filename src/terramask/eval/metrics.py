"""Per-mask quality metrics against a label (numpy only).

Every function takes boolean masks on one pixel grid, shape ``(H, W)``:

- ``pred``: the predicted mask, ``gt``: the ground-truth mask;
- ``ignore``: optional, True where the label is unknown (label value 255 in the dataset
  convention). Ignored pixels count nowhere: not as true positives, false positives or
  false negatives, and not in any area.

Zero-denominator convention (used by every ratio here): when a ratio's denominator is
zero, the score is 1.0 if prediction and label are both empty (inside the valid area)
and 0.0 otherwise. So an empty prediction of an empty label is perfect, and an empty
prediction of a non-empty label scores 0 everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from terramask.core.errors import InputError

IGNORE_LABEL = 255


def _as_mask(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def check_masks(pred, gt, ignore=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and convert to bool; raise :class:`InputError` when the grids differ."""
    pred = _as_mask(pred, "pred")
    gt = _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise InputError(f"prediction grid {pred.shape} differs from label grid {gt.shape}")
    if ignore is not None:
        ignore = _as_mask(ignore, "ignore")
        if ignore.shape != gt.shape:
            raise InputError(f"ignore grid {ignore.shape} differs from label grid {gt.shape}")
    return pred, gt, ignore


def binary_target(labels: np.ndarray, target_class: int, ignore_label: int = IGNORE_LABEL) -> tuple[np.ndarray, np.ndarray]:
    """Class-index label ``(H, W)`` -> ``(target (H, W) bool, ignore (H, W) bool)``."""
    labels = np.asarray(labels)
    return labels == target_class, labels == ignore_label


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of one prediction against one label (ignored pixels excluded)."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn, self.tp + self.fp + self.fn == 0)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, self.tp + self.fp + self.fn == 0)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, self.tp + self.fp + self.fn == 0)

    @property
    def f1(self) -> float:
        """Dice coefficient: ``2 tp / (2 tp + fp + fn)``."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self.tp + self.fp + self.fn == 0)


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def confusion(pred, gt, ignore=None) -> Confusion:
    """Pixel confusion counts of ``pred`` against ``gt``, ignoring ``ignore`` pixels."""
    pred, gt, ignore = check_masks(pred, gt, ignore)
    if ignore is not None:
        valid = ~ignore
        pred = pred & valid
        gt = gt & valid
        n = int(valid.sum())
    else:
        n = int(gt.size)
    tp = int(np.count_nonzero(pred & gt))
    p = int(np.count_nonzero(pred))
    g = int(np.count_nonzero(gt))
    fp, fn = p - tp, g - tp
    return Confusion(tp, fp, fn, n - tp - fp - fn)


def mask_iou(pred, gt, ignore=None) -> float:
    """Intersection over union of two masks (``tp / (tp + fp + fn)``)."""
    return confusion(pred, gt, ignore).iou


def precision(pred, gt, ignore=None) -> float:
    """Fraction of predicted pixels that are labelled (``tp / (tp + fp)``)."""
    return confusion(pred, gt, ignore).precision


def recall(pred, gt, ignore=None) -> float:
    """Fraction of labelled pixels that are predicted (``tp / (tp + fn)``)."""
    return confusion(pred, gt, ignore).recall


def f1_score(pred, gt, ignore=None) -> float:
    """Harmonic mean of precision and recall (= Dice)."""
    return confusion(pred, gt, ignore).f1


@dataclass(frozen=True)
class MaskScores:
    """All per-mask scores of one prediction; ``boundary_f`` is the boundary F-score at
    ``tolerance`` pixels (see :mod:`terramask.eval.boundary`)."""

    iou: float
    precision: float
    recall: float
    f1: float
    boundary_f: float
    tolerance: float
    confusion: Confusion

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("confusion")
        return d


def mask_scores(pred, gt, ignore=None, tolerance: float = 2.0) -> MaskScores:
    """IoU, precision, recall, F1 and boundary F-score of one predicted mask."""
    from terramask.eval.boundary import boundary_fscore

    pred, gt, ignore = check_masks(pred, gt, ignore)
    c = confusion(pred, gt, ignore)
    bf = boundary_fscore(pred, gt, ignore, tolerance=tolerance)
    return MaskScores(c.iou, c.precision, c.recall, c.f1, bf.f, float(tolerance), c)


def instance_ious(instances: np.ndarray, pred_masks, ignore=None, n_instances: int | None = None) -> np.ndarray:
    """IoU of every predicted mask with every labelled instance.

    ``instances``: ``(H, W)`` integer map, ``0`` = no instance, ``1..M`` = instance ids
    (consecutive; instances never overlap). ``pred_masks``: ``(N, H, W)`` bool array or an
    iterable of ``(H, W)`` masks (streamed one at a time). Returns ``(N, M)`` float64.
    Works in ``O(area of each prediction)``: no ``(N, M, H, W)`` stack is ever built.
    """
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise InputError(f"instance map must be (H, W), got shape {instances.shape}")
    if instances.size and int(instances.min()) < 0:
        raise InputError("instance ids must be >= 0")
    if ignore is not None:
        ignore = _as_mask(ignore, "ignore")
        if ignore.shape != instances.shape:
            raise InputError(f"ignore grid {ignore.shape} differs from instance grid {instances.shape}")
        instances = np.where(ignore, 0, instances)
    m = int(instances.max()) if n_instances is None and instances.size else int(n_instances or 0)
    gt_area = np.bincount(instances.ravel(), minlength=m + 1)[1 : m + 1].astype(np.int64)
    rows = []
    for k, mask in enumerate(pred_masks):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != instances.shape:
            raise InputError(f"predicted mask {k} has grid {mask.shape}, label grid is {instances.shape}")
        if ignore is not None:
            mask = mask & ~ignore
        inter = np.bincount(instances[mask], minlength=m + 1)[1 : m + 1].astype(np.int64)
        union = int(mask.sum()) + gt_area - inter
        rows.append(np.where(union > 0, inter / np.maximum(union, 1), 0.0))
    if not rows:
        return np.zeros((0, m), dtype=np.float64)
    return np.stack(rows).astype(np.float64)


def best_instance_ious(instances: np.ndarray, pred_masks, ignore=None, n_instances: int | None = None) -> np.ndarray:
    """``(M,)`` best IoU of each labelled instance with any predicted mask (0 when none)."""
    ious = instance_ious(instances, pred_masks, ignore, n_instances)
    if ious.shape[0] == 0:
        return np.zeros(ious.shape[1], dtype=np.float64)
    return ious.max(axis=0)
