"""The two segmentation methods of the classic prompted engine on a working raster
(GrabCut, random walker) and the mask clean-up and upsampling around them.

Arrays are ``(h, w)`` working-raster grids (``rgb``/``lab`` ``(h, w, 3)``); clicks are
``(P, 2)`` float ``(x, y)`` in that raster's pixels.
"""

from __future__ import annotations

import warnings

import numpy as np

from terramask.core.errors import ModelError
from terramask.core.lazy import require
from terramask.models.classic.features import signed_distance
from terramask.models.classic.guess import dilate, erode, pixel_index


def _cv2():
    return require("cv2", "classic", "opencv-python-headless")


def grabcut(rgb, init, pos_disk, neg_disk, background_zone, inside_box, open_ring, valid, cfg):
    """GrabCut on the working raster from the guess ``init``: ``(mask, None)``, or
    ``(None, None)`` without any object seed."""
    cv2 = _cv2()
    gc = np.where(init, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    if inside_box is not None:
        gc[~inside_box] = cv2.GC_BGD
    gc[open_ring] = cv2.GC_BGD
    gc[~valid] = cv2.GC_BGD
    gc[neg_disk | background_zone] = cv2.GC_BGD
    gc[pos_disk] = cv2.GC_FGD
    fg_like = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if fg_like.sum() < 5:
        if not pos_disk.any():
            return None, None
        grown = dilate(pos_disk, 2) & (gc != cv2.GC_BGD)
        gc[grown & ~pos_disk] = cv2.GC_PR_FGD
    if ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).sum() < 5:
        frame = np.zeros(gc.shape, bool)
        frame[[0, -1], :] = frame[:, [0, -1]] = True
        gc[frame & (gc != cv2.GC_FGD)] = cv2.GC_PR_BGD
        if ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).sum() < 5:
            # nothing left to learn a background from: the object is everything valid
            return valid | pos_disk, None
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(rgb, gc, None, bgd, fgd, cfg.iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:
        raise ModelError(f"GrabCut failed on a {rgb.shape[1]}x{rgb.shape[0]} region: {exc}") from exc
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), None


def random_walker(lab, guess, band_seeds, centre_seed, pos_disk, neg_disk, background_zone, inside_box, open_ring, valid, cfg):
    """Random walker on the working raster: ``(p > 0.5, p)`` with ``p`` the probability of
    the object label, or ``(None, None)`` without any object seed."""
    rw = require("skimage.segmentation", "classic", "scikit-image").random_walker
    shape = lab.shape[:2]
    labels = np.zeros(shape, dtype=np.int32)
    if centre_seed and inside_box is not None:
        # the box's core (its middle half along each axis) is object
        ys, xs = np.nonzero(inside_box)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        core = np.zeros(shape, bool)
        core[y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4] = True
        labels[core & guess] = 1
    if band_seeds and guess.any():
        # seeds away from the guess's boundary, with an unknown band in between
        band = max(2, int(round(0.12 * np.sqrt(int(guess.sum())))))
        labels[~dilate(guess, band)] = 2
        labels[erode(guess, band) & guess] = 1
    if inside_box is not None:
        labels[~inside_box] = 2
    labels[open_ring] = 2
    labels[neg_disk | background_zone] = 2
    labels[pos_disk] = 1
    if not (labels == 1).any():
        return None, None
    if not (labels == 2).any():
        frame = np.zeros(shape, bool)
        frame[[0, -1], :] = frame[:, [0, -1]] = True
        labels[frame & (labels == 0)] = 2
        if not (labels == 2).any():
            main = valid.copy()
            return main, main.astype(np.float32)
    labels[~valid] = -1
    if not (labels == 0).any():
        main = labels == 1
        return main, main.astype(np.float32)
    # scikit-image's edge weights exp(-beta |dI|^2 / (10 std(I) sqrt(C))) are not scale
    # invariant: the method is tuned for intensities in [0, 1], so Lab goes in as Lab / 100
    data = lab.astype(np.float64) / 100.0
    with warnings.catch_warnings():
        # scikit-image warns about the probability tolerance on near-binary solutions
        warnings.simplefilter("ignore", UserWarning)
        prob = rw(data, labels, beta=cfg.beta, mode="bf", channel_axis=-1, return_full_prob=True)
    soft = np.clip(prob[0], 0.0, 1.0).astype(np.float32)
    soft[~valid] = 0.0
    return soft > 0.5, soft


def touching(candidate: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Connected components of ``candidate`` that overlap ``core``."""
    cv2 = _cv2()
    n, lab = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(candidate)
    keep = np.zeros(n, bool)
    keep[np.unique(lab[core & candidate])] = True
    keep[0] = False
    return keep[lab]


def clean(mask: np.ndarray, pos_w: np.ndarray, neg_disk: np.ndarray) -> np.ndarray:
    """Keep the components holding an object click (or, without clicks, those at least a
    tenth of the largest), and fill holes smaller than 1 % of the mask that hold no
    background click."""
    cv2 = _cv2()
    if not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    for y, x in pixel_index(pos_w, mask.shape):
        keep[lab[y, x]] = True
    if not keep[1:].any():
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep[1:] = areas >= 0.1 * areas.max()
    keep[0] = False
    out = keep[lab]
    # holes: background components not touching the raster border
    inv = (~out).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n > 1:
        area = out.sum()
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        fill = stats[:, cv2.CC_STAT_AREA] < max(4, 0.01 * area)
        fill[border] = False
        fill[np.unique(lab[neg_disk])] = False
        fill[0] = False  # label 0 is the mask itself
        out = out | (fill[lab] & (inv > 0))
    return out


def upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Work-raster mask -> ROI mask of ``size = (rows, cols)`` through its signed distance."""
    if mask.shape == size:
        return mask
    if not mask.any():
        return np.zeros(size, bool)
    cv2 = _cv2()
    sdt = signed_distance(mask, clip=8.0)
    return cv2.resize(sdt, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) > 0
