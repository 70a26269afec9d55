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
from dataclasses import dataclass

import numpy as np

from terramask.core.errors import ModelError
from terramask.core.lazy import require
from terramask.models.classic.features import ClassicFeatures
from terramask.models.classic.guess import (
    Hierarchy,
    Scorer,
    background_zone,
    dilate,
    disk_mask,
    erode,
    initial_guess,
    prompt_consistency,
    unique_clicks,
)
from terramask.models.classic.methods import clean, grabcut, random_walker, touching, upsample
from terramask.models.classic.roi import Roi, bbox, expand, extent, make_roi, union

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


# -- the engine -----------------------------------------------------------------------
def segment(feat: ClassicFeatures, query: Query, method: str, cfg: PromptedConfig) -> list[Candidate]:
    """Candidates for one query, best score first (1 to 3 distinct masks on the image grid)."""
    if method not in METHODS:
        raise ModelError(f"unknown classic method {method!r}; use one of {', '.join(METHODS)}")
    h, w = feat.shape
    side = cfg.work_side if method == "grabcut" else cfg.rw_work_side
    pts = query.points
    pts_box = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1) if len(pts) else None
    prior_box = bbox(query.prior) if query.prior is not None else None
    grow = cfg.max_grow
    if query.box is not None:
        core = union(query.box, pts_box, prior_box)
        margin = max(8.0, cfg.box_margin * extent(core))
        grow = 0
    elif prior_box is not None:
        core = union(pts_box, prior_box)
        margin = max(16.0, 0.25 * extent(core))
    else:
        half = max(float(cfg.coarse_extent), extent(pts_box))
        while True:
            roi = make_roi(expand(pts_box, half), (h, w), cfg.coarse_side)
            found, reaches = _coarse_guess(feat, query, cfg, roi)
            if not reaches or grow == 0:
                break
            grow -= 1
            half *= 2
        found_box = bbox(found)
        if found_box is not None:
            core = union(pts_box, found_box)
            margin = max(16.0, 0.3 * extent(core))
        elif pts_box is not None:
            core, margin = pts_box, float(cfg.point_extent)
        else:  # unreachable: the backend refuses a query without clicks, box or prior
            raise ModelError("the classic engine got a query without clicks, box or prior mask")
    while True:
        roi = make_roi(expand(core, margin), (h, w), side)
        candidates, reaches = _run_roi(feat, query, method, cfg, roi)
        if grow == 0 or not reaches:
            return candidates
        grow -= 1
        margin = 2 * margin + extent(core) / 2
        log.debug("classic %s: result reaches the ROI border, growing the margin to %.0f px", method, margin)


class _Raster:
    """The working raster of one ROI: image features and the query resampled to it."""

    def __init__(self, feat: ClassicFeatures, query: Query, roi: Roi, cfg: PromptedConfig) -> None:
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
        return clean(m & self.valid, self.pos, self.neg_disk)

    def reaches_open_side(self, m: np.ndarray) -> bool:
        return self.near_open is not None and bool((m & self.near_open).any())

    def to_image(self, feat: ClassicFeatures, m: np.ndarray) -> np.ndarray:
        full = np.zeros(feat.shape, dtype=bool)
        full[self.roi.y0 : self.roi.y1, self.roi.x0 : self.roi.x1] = upsample(m, self.roi.size)
        return full


def _coarse_guess(feat: ClassicFeatures, query: Query, cfg: PromptedConfig, roi: Roi) -> tuple[np.ndarray, bool]:
    """The object guess on a coarse ROI (image grid) and whether it reaches an open side.
    Only the guess: colour models collapse easily on a large, mostly-background ROI."""
    r = _Raster(feat, query, roi, cfg)
    g = r.guess(cfg)
    return r.to_image(feat, g), r.reaches_open_side(g)


def _run_roi(
    feat: ClassicFeatures, query: Query, method: str, cfg: PromptedConfig, roi: Roi
) -> tuple[list[Candidate], bool]:
    """Scored candidates on one ROI (best first) and whether the best reaches an open side."""
    r = _Raster(feat, query, roi, cfg)
    found: dict[str, np.ndarray] = {}
    guess_area = 0
    if method == "grabcut":
        guess = r.guess(cfg)
        guess_area = int(guess.sum())
        main, _ = grabcut(r.rgb, guess, r.pos_disk, r.neg_disk, r.background_zone, r.inside_box, r.open_ring, r.valid, cfg)
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
        walk_guess = r.guess(cfg) if band_seeds or (centre_seed and len(r.neg)) else r.inside_box
        main, soft = random_walker(
            r.lab, walk_guess, band_seeds, centre_seed, r.pos_disk, r.neg_disk, r.background_zone, r.inside_box, r.open_ring, r.valid, cfg
        )
        if main is not None:
            main = r.clean(main)
            found["main"] = main
            found["tight"] = r.clean(main & (soft > 0.8))
            loose = clean(main | touching(soft > 0.2, main), r.pos, r.neg_disk) & r.valid & ~r.neg_disk
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
