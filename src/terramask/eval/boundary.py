"""Boundary F-score with a pixel tolerance (numpy + scipy.ndimage).

The boundary of a mask is the set of its pixels with at least one 4-neighbour outside
the mask (an inner, one-pixel-wide contour). The edge of the image is *not* a boundary:
an object cut by the image edge has no contour there, because no model can get it wrong.

Boundary precision = fraction of predicted boundary pixels within ``tolerance`` pixels
(Euclidean distance between pixel centres) of a labelled boundary pixel; boundary recall
is the converse; the F-score is their harmonic mean (the DAVIS ``F`` measure with an
absolute tolerance). Boundary pixels on ignored pixels are dropped from both sets.
Zero denominators follow :mod:`terramask.eval.metrics`: 1.0 when both boundaries are
empty, 0.0 when only one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terramask.core.errors import InputError


@dataclass(frozen=True)
class BoundaryScore:
    precision: float
    recall: float
    f: float
    tolerance: float


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool -> ``(H, W)`` bool inner contour (4-connectivity; image edge excluded)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=1)
    return mask & ~eroded


def _distance_to(boundary: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``boundary``."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~boundary)


def boundary_fscore(pred, gt, ignore=None, tolerance: float = 2.0) -> BoundaryScore:
    """Boundary precision, recall and F-score of ``pred`` against ``gt``.

    ``pred``, ``gt``, ``ignore``: ``(H, W)`` bool; ``tolerance`` in pixels (>= 0).
    """
    from terramask.eval.metrics import check_masks

    if not np.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"boundary tolerance must be a number >= 0 pixels, got {tolerance}")
    pred, gt, ignore = check_masks(pred, gt, ignore)
    bp = mask_boundary(pred)
    bg = mask_boundary(gt)
    if ignore is not None:
        bp &= ~ignore
        bg &= ~ignore
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 or n_g == 0:
        v = 1.0 if n_p == 0 and n_g == 0 else 0.0
        return BoundaryScore(v, v, v, float(tolerance))
    # Crop to the joint bounding box grown by the tolerance: distances further out never matter.
    ys, xs = np.nonzero(bp | bg)
    pad = int(np.ceil(tolerance)) + 1
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, gt.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, gt.shape[1])
    bp, bg = bp[y0:y1, x0:x1], bg[y0:y1, x0:x1]
    prec = float(np.count_nonzero(_distance_to(bg)[bp] <= tolerance)) / n_p
    rec = float(np.count_nonzero(_distance_to(bp)[bg] <= tolerance)) / n_g
    f = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return BoundaryScore(prec, rec, f, float(tolerance))
