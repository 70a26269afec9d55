"""Initial object guesses and candidate scores of the ``classic`` prompted engine.

Everything here works on the *working raster* of one region of interest (ROI): arrays of
shape ``(h, w)`` (Lab ``(h, w, 3)``), clicks as ``(P, 2)`` float ``(x, y)`` in that
raster's pixels.

- :class:`Scorer` rates a mask as an object (the ``scores`` the backend reports).
- :class:`Hierarchy` is a region-merging hierarchy of the ROI (gradient-watershed
  superpixels merged by the multiresolution heterogeneity cost of
  :mod:`terramask.models.classic.auto`), snapshotted at a few scales. Its regions are
  edge-aligned and swallow texture, which single-pixel seeds cannot.
- :func:`initial_guess` turns the previous mask (prior, box, or nothing) and the clicks
  into the object guess that GrabCut / the random walker then refine. Each *corrective*
  click (an object click outside the current guess, a background click inside it) adds or
  removes a whole edge-bounded region around it, not a disk. A click agreeing with the
  guess changes nothing (the prior already reflects it).
- :func:`background_zone` is the geodesic split between background and object clicks;
  the prompted engine keeps it background in every round, so corrections stick.

Floods (watershed splits) run on the scorer's smoothed gradient: texture finer than the
object (solar-panel grids, crop rows) must not stop them.
"""

from __future__ import annotations

import numpy as np

from terramask.core.lazy import require
from terramask.models.classic.features import colour_gradient


def _cv2():
    return require("cv2", "classic", "opencv-python-headless")


# -- small raster helpers --------------------------------------------------------------
def disk_mask(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    """``(h, w)`` bool: filled disks of ``radius`` px at ``centres`` ``(P, 2)`` (x, y);
    the pixel under each centre is always set, even for centres on the last row/col.
    Centres on the same pixel are drawn once (cost bounded by the raster, not by ``P``)."""
    cv2 = _cv2()
    out = np.zeros(shape, dtype=np.uint8)
    r = max(1, int(round(radius)))
    centres = np.rint(np.asarray(centres, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    for x, y in np.unique(centres, axis=0):
        cv2.circle(out, (int(x), int(y)), r, 1, thickness=-1)
    rows, cols = pixel_rc(centres, shape)
    out[rows, cols] = 1
    return out > 0


def pixel_rc(pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` int64 arrays ``(P,)``: the pixel under each ``(x, y)`` point
    (nearest pixel index, half to even), clamped to the raster."""
    h, w = shape
    pts = np.rint(np.asarray(pts, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    return np.clip(pts[:, 1], 0, h - 1), np.clip(pts[:, 0], 0, w - 1)


def pixel_index(pts: np.ndarray, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """``(row, col)`` of the pixel under each ``(x, y)`` point, clamped to the raster."""
    rows, cols = pixel_rc(pts, shape)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def unique_clicks(points: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Clicks ``(P, 2)`` (x, y) with ``labels (P,)`` reduced to one per (pixel, label) of
    the raster, in the order of first appearance. Several clicks on one working-raster
    pixel say nothing more than one; without this, thousands of clicks on a small raster
    cost thousands of floods (each corrective click floods the raster once)."""
    labels = np.asarray(labels)
    if len(labels) < 2:
        return points, labels
    rows, cols = pixel_rc(points, shape)
    key = (rows * shape[1] + cols) * 2 + (labels == 1)
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    return points[keep], labels[keep]


def _ellipse(r: int) -> np.ndarray:
    cv2 = _cv2()
    r = max(1, int(r))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a disk of radius ``r`` (the raster edge does not erode)."""
    return _cv2().erode(mask.astype(np.uint8), _ellipse(r), borderValue=1) > 0 if r > 0 else mask


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a disk of radius ``r``."""
    return _cv2().dilate(mask.astype(np.uint8), _ellipse(r), borderValue=0) > 0 if r > 0 else mask


# -- scores ------------------------------------------------------------------------------
class Scorer:
    """Heuristic confidence in [0, 1) that a mask is an object with a real boundary.

    The mean of two terms, computed on the ROI's Lab colours blurred by ``sigma`` px
    (texture finer than the object must not pass for its boundary):

    - edge strength ``g_b / (g_b + g_roi)``: the mean colour gradient on the mask's 2-px
      boundary band against the mean over the ROI (0.5: no stronger than elsewhere);
    - colour separation ``d / (1 + d)``: ``d`` is the Lab distance between the mean
      colours inside and in a ring around the mask (width 15 % of the mask's equivalent
      diameter, at least 2 px), over the sum of their standard deviations + 1 — a
      Fisher-like contrast, high for a homogeneous object on a different background.

    An empty mask scores 0; a mask of several parts, the area-weighted mean of its parts.
    """

    def __init__(self, lab: np.ndarray, valid: np.ndarray, sigma: float = 2.0) -> None:
        cv2 = _cv2()
        self.lab = cv2.GaussianBlur(lab, (0, 0), sigma) if sigma > 0 else lab
        self.grad = colour_gradient(self.lab, 0.0)
        self.valid = valid
        self.g_roi = float(self.grad[valid].mean()) if valid.any() else 0.0

    def __call__(self, mask: np.ndarray) -> float:
        """Score of ``mask``; a mask of several parts scores the area-weighted mean of its
        parts (parts under 5 % of the largest part are ignored), so two separate objects are not
        judged by their mixed colours."""
        area = int(mask.sum())
        if area == 0:
            return 0.0
        cv2 = _cv2()
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if n <= 2:
            return self._one(mask, area)
        # specks (under 5 % of the largest part) are ignored; the largest part always
        # counts, so a mask of many equal small parts is judged by all of them
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
        parts = [(int(a), i + 1) for i, a in enumerate(areas) if a >= 0.05 * areas.max()]
        total = sum(a for a, _ in parts)
        return sum(a * self._one(comp == i, a) for a, i in parts) / total

    def _one(self, mask: np.ndarray, area: int) -> float:
        valid = self.valid
        band = dilate(mask, 1) & ~erode(mask, 1) & valid
        g_b = float(self.grad[band].mean()) if band.any() else 0.0
        s_edge = g_b / (g_b + self.g_roi + 1e-6)
        r = max(2, int(round(0.15 * np.sqrt(area))))
        ring = dilate(mask, r) & ~mask & valid
        inside = mask & valid
        if ring.sum() < 4 or not inside.any():
            s_sep = 0.0
        else:
            a, b = self.lab[inside], self.lab[ring]
            d = float(np.linalg.norm(a.mean(0) - b.mean(0)))
            spread = float(np.sqrt(a.var(0).sum()) + np.sqrt(b.var(0).sum())) + 1.0
            s_sep = (d / spread) / (1.0 + d / spread)
        return 0.5 * (s_edge + s_sep)


def prompt_consistency(mask: np.ndarray, pos: np.ndarray, neg: np.ndarray, inside_box: np.ndarray | None) -> float:
    """Fraction of clicks the mask honours (object clicks inside, background clicks
    outside), times the fraction of the mask inside the box when there is one."""
    factor = 1.0
    total = len(pos) + len(neg)
    if total:
        ok = int(np.count_nonzero(mask[pixel_rc(pos, mask.shape)])) + int(np.count_nonzero(~mask[pixel_rc(neg, mask.shape)]))
        factor = ok / total
    if inside_box is not None and mask.any():
        factor *= float((mask & inside_box).sum()) / float(mask.sum())
    return factor


# -- region hierarchy --------------------------------------------------------------------
class Hierarchy:
    """Region-merging hierarchy of a working raster, snapshotted at ``scales``.

    ``labels (h, w)`` int32 superpixel ids (``-1`` off ``valid``); ``levels[k] (n,)`` the
    region id of every superpixel at ``scales[k]`` (level 0 = the superpixels themselves
    when ``scales[0] == 0``). Regions of a higher level contain those of a lower one.
    """

    def __init__(self, lab: np.ndarray, grad: np.ndarray, valid: np.ndarray, scales: tuple[float, ...], px_per_region: int = 64) -> None:
        from terramask.models.classic.auto import _Merger

        watershed = require("skimage.segmentation", "classic", "scikit-image").watershed
        h, w = grad.shape
        self.valid = valid
        self.flood_grad = grad
        labels = watershed(grad, markers=max(4, (h * w) // px_per_region), mask=valid).astype(np.int32) - 1
        ids, inv = np.unique(labels, return_inverse=True)
        self.labels = inv.reshape(labels.shape).astype(np.int32) - (1 if ids[0] < 0 else 0)
        self.scales = tuple(scales)
        self.levels: list[np.ndarray] = []
        if self.labels.max() < 0:
            return
        merger = _Merger(self.labels, lab, grad, "heterogeneity", 0.0)
        for scale in self.scales:
            merger.merge_below(scale)
            self.levels.append(merger.roots())

    def superpixels_of(self, pts: np.ndarray) -> np.ndarray:
        """``(P,)`` superpixel id under each point (``-1`` on invalid pixels)."""
        return self.labels[pixel_rc(pts, self.labels.shape)].astype(np.int64)

    def region(self, level: int, sp: int) -> np.ndarray:
        """``(h, w)`` bool region holding superpixel ``sp`` at ``level``."""
        roots = self.levels[level]
        return (roots[self.labels] == roots[sp]) & (self.labels >= 0)


def initial_guess(
    base: np.ndarray | None,
    hier: Hierarchy,
    score: Scorer,
    points: np.ndarray,
    labels: np.ndarray,
    open_ring: np.ndarray,
    inside_box: np.ndarray | None,
    seed_radius: float,
) -> np.ndarray:
    """The object guess ``(h, w)`` bool: ``base`` (prior mask or box; empty when None)
    corrected by every click that disagrees with it, in the order given.

    A background click removes the part of the guess that a marker watershed of the
    gradient floods from the background clicks before the flood from the object clicks
    reaches it (the split follows the strongest edges between them); without object
    clicks (a box), the hierarchy region holding it whose removal leaves the best-scoring
    object. An object click adds the best of: the hierarchy regions holding it and no background click, and the
    area the object clicks flood outside the guess before the background clicks and open
    ROI sides do; "best" is the score of the object the addition joins (its part holding
    the click) times click consistency, additions reaching an open ROI side counting half
    (the object probably continues outside).
    When even the superpixel of ``c`` holds a click of the other label, a disk of
    ``seed_radius`` is used instead.
    """
    shape = hier.labels.shape
    hier.flood_grad = score.grad  # floods ignore texture finer than the scores do
    guess = np.zeros(shape, bool) if base is None else base.copy()
    if inside_box is not None:
        guess &= inside_box
    pos, neg = points[labels == 1], points[labels == 0]
    near_open = dilate(open_ring, max(2, int(round(0.02 * max(shape))))) if open_ring.any() else None
    sps = hier.superpixels_of(points) if len(points) else np.zeros(0, np.int64)
    disks = {1: disk_mask(shape, pos, seed_radius), 0: disk_mask(shape, neg, seed_radius)}  # drawn once: cost O(P), not O(P^2)
    for i, ((y, x), label) in enumerate(zip(pixel_index(points, shape), labels, strict=True)):
        if bool(guess[y, x]) == bool(label):
            continue
        other = sps[(labels != label) & (sps >= 0)]
        best, best_score = None, -1.0
        regions = []
        if label == 0 and len(pos):
            # a background click cuts off the part of the guess it floods before the
            # flood from the object clicks (never a score choice: the larger, well-formed
            # mask the user is correcting always scores well)
            regions.append(_click_basin(hier, guess, disks, int(label), open_ring))
        elif sps[i] >= 0:
            for level in range(len(hier.levels)):
                roots = hier.levels[level]
                if np.any(roots[other] == roots[sps[i]]):
                    break  # this region, and every larger one, holds a click of the other label
                regions.append(hier.region(level, int(sps[i])))
        if label == 1:
            regions.append(_click_basin(hier, guess, disks, int(label), open_ring))
        for region in regions:
            if not region.any():
                continue
            cand = guess | region if label == 1 else guess & ~region
            if inside_box is not None:
                cand &= inside_box
            # an addition is judged by the object it now belongs to (the part holding
            # the click), a removal by what is left
            judged = _component_at(cand, y, x) if label == 1 else cand
            s = score(judged) * prompt_consistency(cand, pos, neg, inside_box)
            if label == 1 and near_open is not None and (region & near_open).any():
                s *= 0.5
            if s > best_score:
                best, best_score = cand, s
        if best is None:
            disk = disk_mask(shape, points[i : i + 1], seed_radius)
            best = guess | disk if label == 1 else guess & ~disk
            if inside_box is not None:
                best &= inside_box
        guess = best
    return guess


def _click_basin(
    hier: Hierarchy,
    guess: np.ndarray,
    disks: dict[int, np.ndarray],
    label: int,
    open_ring: np.ndarray,
) -> np.ndarray:
    """The region a click of ``label`` claims by a marker watershed of the gradient: flooding from
    the clicks of its label (``disks[label]``, the seed disks of every click of that label)
    against the clicks of the other label (and, for an object
    click, the open ROI sides), inside the guess for a background click (what to cut off)
    or outside it for an object click (what to add). It splits a region along its
    strongest inner edge where the hierarchy merged both sides early."""
    watershed = require("skimage.segmentation", "classic", "scikit-image").watershed
    shape = guess.shape
    own, rival = disks[label], disks[1 - label].copy()
    if label == 1:
        area = (~guess | own) & hier.valid
        rival |= open_ring
    else:
        area = (guess | own) & hier.valid
    markers = np.zeros(shape, dtype=np.int32)
    markers[rival & area] = 1
    markers[own & area] = 2
    if not (markers == 1).any():
        return np.zeros(shape, bool)
    ws = watershed(hier.flood_grad, markers, mask=area)
    return (ws == 2) & (~guess if label == 1 else guess)


def _component_at(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """The 8-connected part of ``mask`` holding pixel ``(y, x)`` (empty if off the mask)."""
    if not mask[y, x]:
        return np.zeros_like(mask)
    _, comp = _cv2().connectedComponents(mask.astype(np.uint8), connectivity=8)
    return comp == comp[y, x]


def background_zone(
    grad: np.ndarray, valid: np.ndarray, points: np.ndarray, labels: np.ndarray, seed_radius: float
) -> np.ndarray:
    """``(h, w)`` bool: the pixels a marker watershed of the gradient floods from the
    background clicks before the flood from the object clicks reaches them — a geodesic
    split between the two kinds of clicks along the strongest edges between them.
    Empty unless there are clicks of both kinds."""
    shape = grad.shape
    if not (np.any(labels == 1) and np.any(labels == 0)):
        return np.zeros(shape, bool)
    watershed = require("skimage.segmentation", "classic", "scikit-image").watershed
    markers = np.zeros(shape, dtype=np.int32)
    markers[disk_mask(shape, points[labels == 0], seed_radius)] = 2
    markers[disk_mask(shape, points[labels == 1], seed_radius)] = 1
    markers[~valid] = 0
    return watershed(grad, markers, mask=valid) == 2

