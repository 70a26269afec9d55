"""Box helpers: xyxy everywhere inside, XYWH only for COCO records (numpy only)."""

from __future__ import annotations

import numpy as np


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N, 4)`` xywh, same dtype."""
    boxes = np.asarray(boxes)
    out = boxes.copy()
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xywh -> ``(N, 4)`` xyxy, same dtype."""
    boxes = np.asarray(boxes)
    out = boxes.copy()
    out[..., 2] = boxes[..., 0] + boxes[..., 2]
    out[..., 3] = boxes[..., 1] + boxes[..., 3]
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N,)`` areas (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first.

    Ties in score keep the earlier index first (stable), so results are deterministic.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size:
            ious = box_iou(boxes[i : i + 1], boxes[rest])[0]
            suppressed[rest[ious > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def per_class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy :func:`nms` within each class: ``classes`` ``(N,)`` labels of any hashable
    kind (phrase indices, class names); returns the kept indices, highest score first,
    equal scores in index order."""
    classes = np.asarray(classes)
    scores = np.asarray(scores)
    kept: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for label in dict.fromkeys(classes.tolist()):
        idx = np.flatnonzero(classes == label)
        kept.append(idx[nms(np.asarray(boxes)[idx], scores[idx], iou_threshold)])
    order = np.sort(np.concatenate(kept))
    return order[np.argsort(-scores[order].astype(np.float64), kind="stable")]


def mask_to_box(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool -> ``(N, 4)`` xyxy float64 boxes, end-inclusive pixel indices
    like the reference (``x1 = last column``); empty masks give ``[0, 0, 0, 0]``."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    n = masks.shape[0]
    out = np.zeros((n, 4), dtype=np.float64)
    rows_any = np.any(masks, axis=2)
    cols_any = np.any(masks, axis=1)
    for i in range(n):
        ys = np.flatnonzero(rows_any[i])
        xs = np.flatnonzero(cols_any[i])
        if ys.size:
            out[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return out
