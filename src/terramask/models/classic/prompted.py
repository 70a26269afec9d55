"""Prompted segmentation of the ``classic`` backend: GrabCut or random walker, seeded
from points, a box and a prior mask (no learned weights).

One query = clicks (object / background, in the order given), at most one box and an
optional prior mask, all on the image grid (``x = col``, ``y = row``). The work happens
on a region of interest (ROI) around the prompts, downsampled to at most ``work_side``
pixels on its longest side; results return to full resolution through a signed distance
map (smooth boundaries instead of blocky upsampling).

The ROI:

- a box: the box plus ``box_margin`` of its size; outside the box is background;
- a prior mask: its bounding box and the clicks plus a quarter of their extent;
- clicks alone say nothing about the object's size, so a coarse pass first finds the
  object guess (below) on a large ROI (``coarse_extent`` px around the clicks, raster
  ``coarse_side`` px), doubling it while the guess reaches its border; the ROI is then
  the guess's bounding box plus 30 %.

ROI sides that are not image borders are background. Whenever the result reaches one,
the ROI grows and the query reruns (at most ``max_grow`` times).

On the ROI's working raster, :func:`~terramask.models.classic.guess.initial_guess` builds
the object guess from the prior (else the box, else nothing) and region-merging
proposals, so a corrective click adds or removes a whole edge-bounded region, not a
disk. Then:

- GrabCut (OpenCV): the guess is probable object, the rest probable background; clicks
  are small definite disks (``seed_radius`` px); nodata, the outside of the box and the
  *background zone* (:func:`~terramask.models.classic.guess.background_zone`: what the
  background clicks reach before the object clicks do, across the strongest edges
  between them) are definite background, so a correction stays corrected in later
  rounds; colour models and graph cut iterate ``iterations`` times;
- random walker (scikit-image): seeds are the clicks, the background zone, the ROI's
  open sides and the outside of the box; with a prior, also the guess shrunk by a band (object) and
  everything beyond the guess grown by that band (background); with a box and no object
  click, the box's core (its middle half along each axis) is the object seed.

Candidates: ``main`` (the method's result, cleaned: the parts holding object clicks,
small holes filled), ``tight`` / ``loose`` (random walker: probability > 0.8 / > 0.2
connected to ``main``; GrabCut: ``main`` eroded / dilated by 5 % of the square root of
its area) and, for GrabCut, ``guess``. Each is scored by
:class:`~terramask.models.classic.guess.Scorer` times the fraction of clicks it honours
times (with a box) its fraction inside the box; for GrabCut a candidate smaller than
``collapse_fraction`` of the guess is scaled down in proportion (its colour models
collapse onto texture on remote-sensing scenes whose colours repeat everywhere, and the
guess then wins). The three best distinct candidates are returned, best first.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from terramask.core.errors import ModelError
from terramask.core.lazy import require
from terramask.models.classic.features import ClassicFeatures, signed_distance
from terramask.models.classic.guess import (
    Hierarchy,
    Scorer,
    background_zone,
    dilate,
    disk_mask,
    erode,
    initial_guess,
    pixel_index,
    prompt_consistency,
    unique_clicks,
)

log = logging.getLogger(__name__)

METHODS = ("grabcut", "random_walker")


def _cv2():
    return require("cv2", "classic", "opencv-python-headless")


@dataclass(frozen=True)
class PromptedConfig:
    """Tuning of the prompted engine (defaults aim at < 0.5 s per query on 2 CPU cores).

    - ``work_side``: longest side (px) of the working raster for GrabCut;
    - ``rw_work_side``: the same for the random walker (its linear solve is costlier);
    - ``iterations``: GrabCut iterations;
    - ``seed_radius``: radius (image px) of click disks;
    - ``coarse_extent``, ``coarse_side``: half-size (image px) of the first, coarse ROI
      around click-only prompts and the longest side of its working raster;
    - ``point_extent``: ROI margin around the clicks when the coarse pass finds nothing;
    - ``box_margin``: ROI margin around a box, as a fraction of its longest side;
    - ``max_grow``: how many times a ROI may grow when the object reaches its border;
    - ``beta``: random walker edge sensitivity (scikit-image's ``beta`` on Lab / 100; its
      default 130 is far too smooth for colour edges of aerial images);
    - ``score_sigma``: blur (working-raster px) of the colours the scores look at;
    - ``collapse_fraction``: candidates smaller than this fraction of the initial guess
      have their score scaled down in proportion;
    - ``proposal_scales``: heterogeneity thresholds of the region hierarchy (0 = the
      superpixels themselves) that corrective clicks pick regions from.
    """

    work_side: int = 256
    rw_work_side: int = 160
    iterations: int = 4
    seed_radius: float = 3.0
    coarse_extent: int = 192
    coarse_side: int = 128
    point_extent: int = 48
    box_margin: float = 0.15
    max_grow: int = 3
    beta: float = 2000.0
    score_sigma: float = 2.0
    collapse_fraction: float = 0.3
    proposal_scales: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0, 160.0)


@dataclass(frozen=True)
class Query:
    """One prompted query on the image grid: ``points`` ``(P, 2)`` float ``(x, y)`` with
    ``labels`` ``(P,)`` (1 object, 0 background) in the order given, ``box`` ``(4,)`` xyxy
    or ``None``, ``prior`` ``(H, W)`` bool or ``None``."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    prior: np.ndarray | None = None

    @property
    def pos(self) -> np.ndarray:
        return self.points[self.labels == 1]

    @property
    def neg(self) -> np.ndarray:
        return self.points[self.labels == 0]


@dataclass(frozen=True)
class Candidate:
    """A full-resolution ``mask (H, W)`` bool, its ``score`` in [0, 1] and ``kind``
    (``main``, ``guess``, ``tight`` or ``loose``)."""

    mask: np.ndarray
    score: float
    kind: str


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """End-exclusive ``(x0, y0, x1, y1)`` of a bool mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class _Roi:
    """A ROI of the image (end-exclusive bounds) and the size of its working raster."""

    x0: int
    y0: int
    x1: int
    y1: int
    wh: int
    ww: int
    open_sides: tuple[bool, bool, bool, bool]  # left, top, right, bottom not on the image border

    @property
    def sx(self) -> float:
        return self.ww / (self.x1 - self.x0)

    @property
    def sy(self) -> float:
        return self.wh / (self.y1 - self.y0)

    @property
    def size(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def to_work(self, pts: np.ndarray) -> np.ndarray:
        """Image ``(x, y)`` pixel coordinates -> working-raster pixel coordinates."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - self.x0 + 0.5) * self.sx - 0.5
        out[:, 1] = (pts[:, 1] - self.y0 + 0.5) * self.sy - 0.5
        return out

    def box_mask(self, box: np.ndarray) -> np.ndarray:
        """Working-raster pixels whose footprint overlaps the box ``(4,)`` xyxy."""
        x0 = int(np.clip(np.floor((box[0] - self.x0) * self.sx), 0, self.ww - 1))
        y0 = int(np.clip(np.floor((box[1] - self.y0) * self.sy), 0, self.wh - 1))
        x1 = int(np.clip(np.ceil((box[2] - self.x0) * self.sx), x0 + 1, self.ww))
        y1 = int(np.clip(np.ceil((box[3] - self.y0) * self.sy), y0 + 1, self.wh))
        out = np.zeros((self.wh, self.ww), dtype=bool)
        out[y0:y1, x0:x1] = True
        return out

    def ring(self, open_only: bool) -> np.ndarray:
        """1-px frame of the working raster (only its open sides when ``open_only``)."""
        ring = np.zeros((self.wh, self.ww), dtype=bool)
        left, top, right, bottom = self.open_sides if open_only else (True, True, True, True)
        ring[:, 0] |= left
        ring[0, :] |= top
        ring[:, -1] |= right
        ring[-1, :] |= bottom
        return ring


def _make_roi(bounds: tuple[float, float, float, float], shape: tuple[int, int], work_side: int) -> _Roi:
    h, w = shape
    x0 = int(np.clip(np.floor(bounds[0]), 0, w - 1))
    y0 = int(np.clip(np.floor(bounds[1]), 0, h - 1))
    x1 = int(np.clip(np.ceil(bounds[2]), x0 + 1, w))
    y1 = int(np.clip(np.ceil(bounds[3]), y0 + 1, h))
    rh, rw = y1 - y0, x1 - x0
    s = min(1.0, work_side / max(rh, rw))
    wh, ww = max(1, int(round(rh * s))), max(1, int(round(rw * s)))
    return _Roi(x0, y0, x1, y1, wh, ww, (x0 > 0, y0 > 0, x1 < w, y1 < h))


def _union(*boxes) -> tuple[float, float, float, float]:
    bs = np.array([b for b in boxes if b is not None], dtype=np.float64).reshape(-1, 4)
    return (bs[:, 0].min(), bs[:, 1].min(), bs[:, 2].max(), bs[:, 3].max())


def _extent(box) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _expand(box, margin: float) -> tuple[float, float, float, float]:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)


# -- the engine -----------------------------------------------------------------------
def segment(feat: ClassicFeatures, query: Query, method: str, cfg: PromptedConfig) -> list[Candidate]:
    """Candidates for one query, best score first (1 to 3 distinct masks on the image grid)."""
    if method not in METHODS:
        raise ModelError(f"unknown classic method {method!r}; use one of {', '.join(METHODS)}")
    h, w = feat.shape
    side = cfg.work_side if method == "grabcut" else cfg.rw_work_side
    pts = query.points
    pts_box = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1) if len(pts) else None
    prior_box = _bbox(query.prior) if query.prior is not None else None
    grow = cfg.max_grow
    if query.box is not None:
        core = _union(query.box, pts_box, prior_box)
        margin = max(8.0, cfg.box_margin * _extent(core))
        grow = 0
    elif prior_box is not None:
        core = _union(pts_box, prior_box)
        margin = max(16.0, 0.25 * _extent(core))
    else:
        half = max(float(cfg.coarse_extent), _extent(pts_box))
        while True:
            roi = _make_roi(_expand(pts_box, half), (h, w), cfg.coarse_side)
            found, reaches = _coarse_guess(feat, query, cfg, roi)
            if not reaches or grow == 0:
                break
            grow -= 1
            half *= 2
        found_box = _bbox(found)
        if found_box is not None:
            core = _union(pts_box, found_box)
            margin = max(16.0, 0.3 * _extent(core))
        else:
            core, margin = pts_box, float(cfg.point_extent)
    while True:
        roi = _make_roi(_expand(core, margin), (h, w), side)
        candidates, reaches = _run_roi(feat, query, method, cfg, roi)
        if grow == 0 or not reaches:
            return candidates
        grow -= 1
        margin = 2 * margin + _extent(core) / 2
        log.debug("classic %s: result reaches the ROI border, growing the margin to %.0f px", method, margin)


class _Raster:
    """The working raster of one ROI: image features and the query resampled to it."""

    def __init__(self, feat: ClassicFeatures, query: Query, roi: _Roi, cfg: PromptedConfig) -> None:
        cv2 = _cv2()
        self.roi = roi
        ys, xs = slice(roi.y0, roi.y1), slice(roi.x0, roi.x1)
        size = (roi.ww, roi.wh)
        same = (roi.wh, roi.ww) == roi.size

        def down(a: np.ndarray, interp: int) -> np.ndarray:
            a = np.ascontiguousarray(a[ys, xs])
            return a if same else cv2.resize(a, size, interpolation=interp)

        self.rgb = down(feat.rgb, cv2.INTER_AREA)
        self.lab = down(feat.lab, cv2.INTER_AREA)
        self.grad = down(feat.grad, cv2.INTER_AREA)
        self.valid = down(feat.valid.astype(np.uint8), cv2.INTER_NEAREST) > 0
        self.shape = (roi.wh, roi.ww)
        self.r_seed = max(1.0, cfg.seed_radius * min(roi.sx, roi.sy))
        self.points, self.labels = unique_clicks(roi.to_work(query.points), query.labels, self.shape)
        self.pos, self.neg = self.points[self.labels == 1], self.points[self.labels == 0]
        self.pos_disk = disk_mask(self.shape, self.pos, self.r_seed) & self.valid
        self.neg_disk = disk_mask(self.shape, self.neg, self.r_seed)
        self.inside_box = roi.box_mask(query.box) if query.box is not None else None
        self.prior = down(query.prior.astype(np.float32), cv2.INTER_AREA) > 0.5 if query.prior is not None else None
        self.open_ring = roi.ring(open_only=True)
        self.near_open = dilate(self.open_ring, max(2, int(round(0.02 * max(self.shape))))) if self.open_ring.any() else None
        self.scorer = Scorer(self.lab, self.valid, cfg.score_sigma)
        # geodesic splits run on the score's smoothed gradient: texture finer than the
        # object must not stop a flood
        self.background_zone = background_zone(self.scorer.grad, self.valid, self.points, self.labels, self.r_seed)

    def guess(self, cfg: PromptedConfig) -> np.ndarray:
        """The initial object guess (see :func:`initial_guess`), cleaned."""
        base = self.prior if self.prior is not None else self.inside_box
        hier = Hierarchy(self.lab, self.grad, self.valid, cfg.proposal_scales)
        if not hier.levels:
            return np.zeros(self.shape, bool)
        g = initial_guess(base, hier, self.scorer, self.points, self.labels, self.open_ring, self.inside_box, self.r_seed)
        g &= self.valid & ~self.background_zone
        g[self.neg_disk] = False
        return self.clean(g)

    def clean(self, m: np.ndarray) -> np.ndarray:
        return _clean(m & self.valid, self.pos, self.neg_disk)

    def reaches_open_side(self, m: np.ndarray) -> bool:
        return self.near_open is not None and bool((m & self.near_open).any())

    def to_image(self, feat: ClassicFeatures, m: np.ndarray) -> np.ndarray:
        full = np.zeros(feat.shape, dtype=bool)
        full[self.roi.y0 : self.roi.y1, self.roi.x0 : self.roi.x1] = _upsample(m, self.roi.size)
        return full


def _coarse_guess(feat: ClassicFeatures, query: Query, cfg: PromptedConfig, roi: _Roi) -> tuple[np.ndarray, bool]:
    """The object guess on a coarse ROI (image grid) and whether it reaches an open side.
    Only the guess: colour models collapse easily on a large, mostly-background ROI."""
    r = _Raster(feat, query, roi, cfg)
    g = r.guess(cfg)
    return r.to_image(feat, g), r.reaches_open_side(g)


def _run_roi(
    feat: ClassicFeatures, query: Query, method: str, cfg: PromptedConfig, roi: _Roi
) -> tuple[list[Candidate], bool]:
    """Scored candidates on one ROI (best first) and whether the best reaches an open side."""
    r = _Raster(feat, query, roi, cfg)
    found: dict[str, np.ndarray] = {}
    guess_area = 0
    if method == "grabcut":
        guess = r.guess(cfg)
        guess_area = int(guess.sum())
        main, _ = _grabcut(r.rgb, guess, r.pos_disk, r.neg_disk, r.background_zone, r.inside_box, r.open_ring, r.valid, cfg)
        found["guess"] = guess
        if main is not None:
            main = r.clean(main)
            found["main"] = main
            rad = max(1, int(round(0.05 * np.sqrt(max(1, int(main.sum()))))))
            found["tight"] = r.clean(erode(main, rad))
            found["loose"] = r.clean(dilate(main, rad))
    else:
        # clicks seed the walk; a prior mask (with its corrections) adds band seeds; a box
        # without object clicks adds its core
        band_seeds = query.prior is not None
        centre_seed = query.box is not None and query.prior is None and not len(r.pos)
        guess = r.guess(cfg) if band_seeds or (centre_seed and len(r.neg)) else r.inside_box
        main, soft = _random_walker(
            r.lab, guess, band_seeds, centre_seed, r.pos_disk, r.neg_disk, r.background_zone, r.inside_box, r.open_ring, r.valid, cfg
        )
        if main is not None:
            main = r.clean(main)
            found["main"] = main
            found["tight"] = r.clean(main & (soft > 0.8))
            loose = _clean(main | _touching(soft > 0.2, main), r.pos, r.neg_disk) & r.valid & ~r.neg_disk
            found["loose"] = loose & r.inside_box if r.inside_box is not None else loose

    scored: list[tuple[float, str, np.ndarray]] = []
    for kind in ("main", "guess", "tight", "loose"):  # ties keep this order
        m = found.get(kind)
        if m is None or not m.any() or any(np.array_equal(m, other) for _, _, other in scored):
            continue
        score = r.scorer(m) * prompt_consistency(m, r.pos, r.neg, r.inside_box)
        if guess_area and cfg.collapse_fraction > 0:
            score *= min(1.0, float(m.sum()) / (cfg.collapse_fraction * guess_area))
        scored.append((float(score), kind, m))
    if not scored:
        scored.append((0.0, "main", np.zeros(r.shape, bool)))
    scored.sort(key=lambda c: -c[0])
    candidates = [Candidate(r.to_image(feat, m), score, kind) for score, kind, m in scored[:3]]
    reaches = r.reaches_open_side(scored[0][2])
    if method == "grabcut":
        # GrabCut leaks easily through similar colours; grow only when the region guess
        # also says the object continues
        reaches = reaches and r.reaches_open_side(found["guess"])
    return candidates, reaches


def _grabcut(rgb, init, pos_disk, neg_disk, background_zone, inside_box, open_ring, valid, cfg):
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


def _random_walker(lab, guess, band_seeds, centre_seed, pos_disk, neg_disk, background_zone, inside_box, open_ring, valid, cfg):
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


def _touching(candidate: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Connected components of ``candidate`` that overlap ``core``."""
    cv2 = _cv2()
    n, lab = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(candidate)
    keep = np.zeros(n, bool)
    keep[np.unique(lab[core & candidate])] = True
    keep[0] = False
    return keep[lab]


def _clean(mask: np.ndarray, pos_w: np.ndarray, neg_disk: np.ndarray) -> np.ndarray:
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


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Work-raster mask -> ROI mask of ``size = (rows, cols)`` through its signed distance."""
    if mask.shape == size:
        return mask
    if not mask.any():
        return np.zeros(size, bool)
    cv2 = _cv2()
    sdt = signed_distance(mask, clip=8.0)
    return cv2.resize(sdt, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) > 0
