"""Automatic segmentation of the ``classic`` backend: superpixels + region merging.

The "superpixels" baseline of remote-sensing segmentation, without learned weights:

1. over-segment the image into superpixels (scikit-image): a watershed of the colour
   gradient from a regular grid of seeds (default: fast, borders on edges), SLIC (k-means
   in Lab + xy) or Felzenszwalb's graph method (slowest: seconds per megapixel);
2. build the region adjacency graph (4-neighbour contacts between superpixels, in numpy)
   and merge hierarchically: always the adjacent pair with the lowest merge cost, until
   the lowest cost exceeds ``merge_thresh``. Costs (``criterion``):

   - ``heterogeneity`` (default): the colour part of the multiresolution segmentation of
     Baatz & Schaepe (2000), the object-based image analysis standard in remote sensing
     (eCognition): ``sqrt(sum_c n_m sd_m,c - n_1 sd_1,c - n_2 sd_2,c)``, the growth of
     the area-weighted Lab standard deviation caused by the merge; ``merge_thresh`` is its
     "scale parameter" (default 60). Small regions merge first; large homogeneous fields
     stay apart unless nearly identical;
   - ``colour``: Delta E (CIE76) between mean Lab colours plus ``edge_weight`` times the
     mean colour gradient along the shared border (default ``merge_thresh`` 12);
3. keep merging (cheapest pair first) while there are more than ``max_regions`` regions,
   then merge every region smaller than ``min_area`` pixels into its cheapest neighbour;
4. one mask per region, with a homogeneity score, a stability score, a representative
   interior point and the crop box.

Nodata pixels belong to no region. Regions partition the valid pixels: masks never
overlap.

Scores (documented here because they are not SAM's):

- ``scores`` (homogeneity): ``1 / (1 + s / 10)`` where ``s`` is the root mean squared Lab
  distance of the region's pixels to their mean colour; 1 for a flat region, 0.5 when the
  spread is 10 Delta E;
- ``stability_score``: how much the region survives a change of the merge threshold,
  like SAM's stability (IoU of a mask at two thresholds): ``|A| / |C|`` where ``A`` is
  the largest region of the merge at ``merge_thresh / stability_factor`` inside it and
  ``C`` the region containing it when merging continues to
  ``merge_thresh * stability_factor``. 1 when nothing changes.

Memory: the result holds N dense ``(H, W)`` bool masks. N is bounded by ``max_regions``
(default 256) and by ``max_mask_bytes`` (default 1 GiB: N <= max_mask_bytes / (H * W),
e.g. 1024 regions at 1024 x 1024, 64 at 4096 x 4096); run large scenes tile by tile.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

import numpy as np

from terramask.core.errors import InputError
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.models.classic.features import ClassicFeatures

log = logging.getLogger(__name__)

SUPERPIXELS = ("watershed", "slic", "felzenszwalb")
CRITERIA = ("heterogeneity", "colour")
DEFAULT_THRESH = {"heterogeneity": 60.0, "colour": 12.0}


@dataclass(frozen=True)
class AutoParams:
    """Parameters of :func:`generate` (see the module docstring).

    - ``superpixels``: ``watershed``, ``slic`` or ``felzenszwalb``;
    - ``n_segments``: watershed/SLIC superpixel count (default: one per 600 px, 64..4000);
      ``compactness``: SLIC colour/space balance;
    - ``scale``, ``sigma``: Felzenszwalb parameters (``min_size`` = ``min_area / 4``);
    - ``criterion``: ``heterogeneity`` or ``colour`` merge cost (module docstring);
    - ``merge_thresh``: cost at which merging stops (default 60 for ``heterogeneity``,
      12 for ``colour``); ``edge_weight``: border-gradient weight of ``colour``;
    - ``min_area``: smallest region in pixels (default ``max(32, H*W / 10000)``);
    - ``max_regions``, ``max_mask_bytes``: bounds on the number of masks returned;
    - ``stability_factor``: threshold ratio used by the stability score (> 1).
    """

    superpixels: str = "watershed"
    n_segments: int | None = None
    compactness: float = 10.0
    scale: float = 100.0
    sigma: float = 0.8
    criterion: str = "heterogeneity"
    merge_thresh: float | None = None
    edge_weight: float = 1.0
    min_area: int | None = None
    max_regions: int = 256
    max_mask_bytes: int = 1 << 30
    stability_factor: float = 1.5

    def validate(self) -> None:
        if self.superpixels not in SUPERPIXELS:
            raise InputError(f"superpixels must be one of {', '.join(SUPERPIXELS)}, got {self.superpixels!r}")
        if self.criterion not in CRITERIA:
            raise InputError(f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        for name in ("compactness", "scale"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.merge_thresh is not None and not self.merge_thresh > 0:
            raise InputError(f"merge_thresh must be > 0, got {self.merge_thresh!r}")
        if self.edge_weight < 0:
            raise InputError(f"edge_weight must be >= 0, got {self.edge_weight!r}")
        if self.sigma < 0:
            raise InputError(f"sigma must be >= 0, got {self.sigma!r}")
        if self.n_segments is not None and self.n_segments < 1:
            raise InputError(f"n_segments must be >= 1, got {self.n_segments!r}")
        if self.min_area is not None and self.min_area < 0:
            raise InputError(f"min_area must be >= 0 pixels, got {self.min_area!r}")
        if self.max_regions < 1:
            raise InputError(f"max_regions must be >= 1, got {self.max_regions!r}")
        if self.max_mask_bytes < 1:
            raise InputError(f"max_mask_bytes must be >= 1, got {self.max_mask_bytes!r}")
        if not self.stability_factor > 1:
            raise InputError(f"stability_factor must be > 1, got {self.stability_factor!r}")


def superpixels(feat: ClassicFeatures, params: AutoParams, min_area: int) -> np.ndarray:
    """``(H, W)`` int32 superpixel labels ``0..n-1``; nodata pixels get ``-1``."""
    seg = require("skimage.segmentation", "classic", "scikit-image")
    h, w = feat.shape
    n = params.n_segments or int(np.clip(h * w / 600, 64, 4000))
    if params.superpixels == "watershed":
        # watershed of the colour gradient from a regular grid of seeds: superpixels whose
        # borders follow the strongest edges (fast, compiled, no colour clustering)
        labels = seg.watershed(feat.grad, markers=n, mask=feat.valid).astype(np.int32)
        labels[labels == 0] = -1
    elif params.superpixels == "slic":
        mask = feat.valid if not feat.valid.all() else None
        # scikit-image rescales its input to [0, 1] before its own Lab conversion, so it
        # gets RGB (passing Lab would shrink colour distances against compactness)
        labels = seg.slic(
            feat.rgb,
            n_segments=n,
            compactness=params.compactness,
            convert2lab=True,
            channel_axis=-1,
            start_label=1,
            mask=mask,
            max_num_iter=5,
            enforce_connectivity=True,
        )
        labels = labels.astype(np.int32) - 1  # masked pixels were 0 -> -1
    else:
        labels = seg.felzenszwalb(
            feat.rgb, scale=params.scale, sigma=params.sigma, min_size=max(1, int(min_area // 4))
        ).astype(np.int32)
    labels[~feat.valid] = -1
    # compact ids 0..n-1 over the valid pixels
    ids, inv = np.unique(labels, return_inverse=True)
    inv = inv.reshape(labels.shape).astype(np.int32)
    if ids[0] == -1:
        inv -= 1
    return inv


class _Merger:
    """Greedy hierarchical merging on a region adjacency graph (union-find + heap).

    Regions carry pixel count and Lab sums (for means and spreads); edge weights are the
    Delta E (CIE76) between the mean colours of adjacent regions. Stale heap entries are
    skipped through per-region version counters.
    """

    def __init__(
        self, labels: np.ndarray, lab: np.ndarray, grad: np.ndarray, criterion: str, edge_weight: float
    ) -> None:
        n = int(labels.max()) + 1 if labels.size else 0
        flat = labels.ravel()
        ok = flat >= 0
        fl = flat[ok]
        self.n = n
        self.criterion = criterion
        self.edge_weight = float(edge_weight)
        self.count = np.bincount(fl, minlength=n).astype(np.float64)
        cols = lab.reshape(-1, 3)[ok].astype(np.float64)
        self.sum = np.stack([np.bincount(fl, weights=cols[:, c], minlength=n) for c in range(3)], axis=1)
        self.sq = np.stack([np.bincount(fl, weights=cols[:, c] ** 2, minlength=n) for c in range(3)], axis=1)
        self.means = self.sum / np.maximum(self.count, 1.0)[:, None]
        self.parent = np.arange(n)
        self.version = np.zeros(n, dtype=np.int64)
        self.alive = np.ones(n, dtype=bool)
        self.regions = n
        # contacts between 4-neighbours of different regions, with the gradient on them
        pairs, gsum = [np.zeros(0, np.int64)], [np.zeros(0)]
        for (a, b), (ga, gb) in (
            ((labels[:, :-1], labels[:, 1:]), (grad[:, :-1], grad[:, 1:])),
            ((labels[:-1, :], labels[1:, :]), (grad[:-1, :], grad[1:, :])),
        ):
            d = (a != b) & (a >= 0) & (b >= 0)
            lo, hi = np.minimum(a[d], b[d]), np.maximum(a[d], b[d])
            pairs.append(lo.astype(np.int64) * n + hi)
            gsum.append(0.5 * (ga[d] + gb[d]).astype(np.float64))
        keys, inv = np.unique(np.concatenate(pairs), return_inverse=True)
        e_len = np.bincount(inv, minlength=len(keys)).astype(np.float64)
        e_grad = np.bincount(inv, weights=np.concatenate(gsum), minlength=len(keys))
        a_ids, b_ids = (keys // n).tolist(), (keys % n).tolist()
        self.adj: list[set[int]] = [set() for _ in range(n)]
        #: (lo, hi) -> [contact length, summed gradient on the contact]
        self.edges: dict[tuple[int, int], list[float]] = {}
        for a, b, ln, g in zip(a_ids, b_ids, e_len.tolist(), e_grad.tolist(), strict=True):
            self.adj[a].add(b)
            self.adj[b].add(a)
            self.edges[(a, b)] = [ln, g]
        ws = self._cost(keys // n, keys % n, e_len, e_grad).tolist()
        self.heap: list[tuple[float, int, int, int, int]] = [(w, a, b, 0, 0) for w, a, b in zip(ws, a_ids, b_ids, strict=True)]
        heapq.heapify(self.heap)

    def _cost(self, a: np.ndarray, b: np.ndarray, e_len: np.ndarray, e_grad: np.ndarray) -> np.ndarray:
        """Merge costs of region pairs ``a[i], b[i]`` (see :class:`AutoParams.criterion`)."""
        if self.criterion == "heterogeneity":
            n1, n2 = self.count[a][:, None], self.count[b][:, None]
            s1, s2, q1, q2 = self.sum[a], self.sum[b], self.sq[a], self.sq[b]
            nm, sm, qm = n1 + n2, s1 + s2, q1 + q2

            def n_sd(n, s, q):  # n * standard deviation, per channel: sqrt(n q - s^2)
                return np.sqrt(np.maximum(n * q - s * s, 0.0))

            cost = (n_sd(nm, sm, qm) - n_sd(n1, s1, q1) - n_sd(n2, s2, q2)).sum(axis=1)
            return np.sqrt(np.maximum(cost, 0.0))
        colour = np.sqrt(((self.means[a] - self.means[b]) ** 2).sum(axis=1))
        return colour + self.edge_weight * e_grad / np.maximum(e_len, 1.0)

    def weights(self, r: int, others: list[int]) -> np.ndarray:
        """Merge costs between region ``r`` and its neighbours ``others``."""
        e = np.array([self.edges[(r, c) if r < c else (c, r)] for c in others], dtype=np.float64).reshape(-1, 2)
        return self._cost(np.full(len(others), r), np.asarray(others), e[:, 0], e[:, 1])

    def _peek(self) -> tuple[float, int, int] | None:
        while self.heap:
            w, a, b, va, vb = self.heap[0]
            if self.alive[a] and self.alive[b] and self.version[a] == va and self.version[b] == vb:
                return w, a, b
            heapq.heappop(self.heap)
        return None

    def merge(self, a: int, b: int) -> None:
        """Merge region ``b`` into ``a`` (both roots) and queue the new edges of ``a``."""
        self.count[a] += self.count[b]
        self.sum[a] += self.sum[b]
        self.sq[a] += self.sq[b]
        self.means[a] = self.sum[a] / self.count[a]
        self.parent[b] = a
        self.alive[b] = False
        self.version[a] += 1
        nb = (self.adj[a] | self.adj[b]) - {a, b}
        self.edges.pop((a, b) if a < b else (b, a), None)
        for c in self.adj[b]:
            if c == a:
                continue
            moved = self.edges.pop((b, c) if b < c else (c, b))
            key = (a, c) if a < c else (c, a)
            if key in self.edges:
                self.edges[key][0] += moved[0]
                self.edges[key][1] += moved[1]
            else:
                self.edges[key] = moved
            self.adj[c].discard(b)
            self.adj[c].add(a)
        self.adj[a] = nb
        self.adj[b] = set()
        self.regions -= 1
        if nb:
            others = list(nb)
            ws = self.weights(a, others).tolist()
            va = int(self.version[a])
            for c, w, vc in zip(others, ws, self.version[others].tolist(), strict=True):
                if a < c:
                    heapq.heappush(self.heap, (w, a, c, va, vc))
                else:
                    heapq.heappush(self.heap, (w, c, a, vc, va))

    def merge_below(self, thresh: float) -> None:
        """Merge closest pairs while their distance is <= ``thresh``."""
        while (top := self._peek()) is not None and top[0] <= thresh:
            heapq.heappop(self.heap)
            self.merge(top[1], top[2])

    def merge_to_count(self, max_regions: int) -> None:
        """Merge closest pairs until at most ``max_regions`` regions remain (or none adjacent)."""
        while self.regions > max_regions and (top := self._peek()) is not None:
            heapq.heappop(self.heap)
            self.merge(top[1], top[2])

    def absorb_small(self, min_area: float) -> None:
        """Merge every region smaller than ``min_area`` into its most similar neighbour,
        smallest first; isolated small regions stay (the caller drops them)."""
        small: list[tuple[int, int]] = [(int(self.count[r]), int(r)) for r in np.flatnonzero(self.alive) if self.count[r] < min_area]
        heapq.heapify(small)
        while small:
            area, r = heapq.heappop(small)
            if not self.alive[r] or self.count[r] != area or not self.adj[r]:
                continue
            nbs = list(self.adj[r])
            best = nbs[int(np.argmin(self.weights(r, nbs)))]
            self.merge(best, r)
            if self.count[best] < min_area:
                heapq.heappush(small, (int(self.count[best]), best))

    def roots(self) -> np.ndarray:
        """``(n,)`` root id of every superpixel (path-compressed copy)."""
        p = self.parent.copy()
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def generate(feat: ClassicFeatures, params: AutoParams) -> MaskSet:
    """Regions of the image as a :class:`MaskSet` on its grid, largest first.

    Columns: ``masks (N, H, W)`` bool (disjoint), ``scores`` (homogeneity), ``boxes`` xyxy,
    ``stability_score (N,)`` float32, ``point_coords (N, 2)`` float64 ``(x, y)`` of the
    pixel farthest inside each region, ``crop_box (N, 4)`` float64 = the full image
    ``[0, 0, W, H]`` (xyxy, which for the full image equals COCO xywh).
    """
    params.validate()
    h, w = feat.shape
    min_area = params.min_area if params.min_area is not None else max(32, (h * w) // 10000)
    cap = int(min(params.max_regions, max(1, params.max_mask_bytes // max(1, h * w))))
    labels = superpixels(feat, params, min_area)
    if labels.max(initial=-1) < 0:
        return MaskSet.empty((h, w))
    m = _Merger(labels, feat.lab, feat.grad, params.criterion, params.edge_weight)
    thresh = params.merge_thresh if params.merge_thresh is not None else DEFAULT_THRESH[params.criterion]
    m.merge_below(thresh / params.stability_factor)
    fine = m.roots()
    m.merge_below(thresh)
    m.merge_to_count(cap)
    m.absorb_small(min_area)
    final = m.roots()
    keep = np.flatnonzero(m.alive & (m.count >= max(1, min_area)))
    if len(keep) > cap:  # isolated small pieces cannot merge; keep the largest
        keep = keep[np.argsort(-m.count[keep], kind="stable")[:cap]]
    order = keep[np.argsort(-m.count[keep], kind="stable")]
    count, csum, csq = m.count[order].copy(), m.sum[order].copy(), m.sq[order].copy()
    m.merge_below(thresh * params.stability_factor)
    coarse = m.roots()

    sp_area = np.bincount(labels[labels >= 0], minlength=m.n).astype(np.float64)
    fine_area = np.bincount(fine, weights=sp_area, minlength=m.n)
    fine_roots = np.flatnonzero(fine == np.arange(m.n))
    largest_fine = np.zeros(m.n)
    np.maximum.at(largest_fine, final[fine_roots], fine_area[fine_roots])
    coarse_area = np.bincount(coarse, weights=sp_area, minlength=m.n)
    stability = (largest_fine[order] / coarse_area[coarse[order]]).astype(np.float32)
    mean = csum / count[:, None]
    spread = np.sqrt(np.clip(csq / count[:, None] - mean**2, 0.0, None).sum(axis=1))
    homog = (1.0 / (1.0 + spread / 10.0)).astype(np.float32)

    index_of_root = np.full(m.n + 1, -1, dtype=np.int64)  # last slot: nodata (label -1)
    index_of_root[order] = np.arange(len(order))
    region = index_of_root[np.append(final, m.n)][labels]
    masks = region[None, :, :] == np.arange(len(order))[:, None, None]
    points = _interior_points(masks)
    crop = np.tile(np.array([0.0, 0.0, float(w), float(h)]), (len(order), 1))
    log.debug("classic generate: %d superpixels -> %d regions", m.n, len(order))
    return MaskSet(
        masks,
        homog,
        extras={"stability_score": stability, "point_coords": points, "crop_box": crop},
    )


def _interior_points(masks: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float64 ``(x, y)``: for each mask the pixel farthest from its boundary."""
    cv2 = require("cv2", "classic", "opencv-python-headless")
    out = np.zeros((len(masks), 2), dtype=np.float64)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
        crop[1:-1, 1:-1] = m[y0:y1, x0:x1]
        dt = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
        yy, xx = np.unravel_index(int(np.argmax(dt)), dt.shape)
        out[i] = (x0 + xx - 1, y0 + yy - 1)
    return out
