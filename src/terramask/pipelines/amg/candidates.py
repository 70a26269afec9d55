"""Per-batch candidate filtering of automatic mask generation, in two modes.

Both modes take the decoder's low-resolution logits of the candidates that passed
``pred_iou_thresh`` and return the ones that pass ``stability_score_thresh`` and the
crop-edge filter, with their boxes, for per-crop NMS.

- :func:`exact_batch` decides on full-resolution logits, as the reference does, but
  computes them only inside the window where they can exceed ``threshold - offset``
  (see :mod:`terramask.pipelines.amg.geometry`), so counts, stability scores, masks and
  boxes equal those of the full-image computation. Masks are kept compact.
- :func:`fast_batch` decides on the low-resolution logits (stability from low-res pixel
  counts, exact for the few candidates within :data:`STABILITY_MARGIN` of the
  threshold; boxes from sub-pixel threshold crossings) and keeps only the low-res window
  each survivor needs; :func:`fast_finish` upsamples the survivors of NMS, each inside
  its box.

Frames: boxes and points are pixels of the crop (``x, y``), boxes end-inclusive xyxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terramask.pipelines.amg.geometry import LowResGeometry
from terramask.pipelines.amg.masks import CompactMasks
from terramask.pipelines.amg.postprocess import box_near_crop_edge

#: Most candidates upsampled in one ``upscale_logits`` call (bounds temporary memory).
UPSCALE_CHUNK = 8


@dataclass
class CropContext:
    """What the filters need to know about the crop being processed."""

    upscale: Any  # (embedding, low (N, L, L), window) -> (N, h, w) logits
    embedding: Any
    geometry: LowResGeometry
    crop_box: tuple[int, int, int, int]
    orig_size: tuple[int, int]
    threshold: float
    params: Any

    @property
    def crop_shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.crop_box
        return (y1 - y0, x1 - x0)


@dataclass
class Candidates:
    """Candidates of one crop (crop frame). ``masks`` (exact) or ``low`` (fast) holds the
    pixels: ``low[i] = ((c0, r0), float16 window)`` of the low-res logits and
    ``windows[i]`` the image window its mask lies in (``None``: empty mask)."""

    iou: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    masks: CompactMasks | None = None
    low: list = field(default_factory=list)
    windows: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.iou)

    @classmethod
    def concat(cls, parts: list["Candidates"], shape: tuple[int, int], exact: bool) -> "Candidates":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(
                np.zeros(0, np.float32),
                np.zeros(0, np.float32),
                np.zeros((0, 2)),
                np.zeros((0, 4)),
                CompactMasks.empty(shape) if exact else None,
            )
        masks = None
        if exact:
            exact_masks = []
            for p in parts:
                if p.masks is None:  # exact_batch and _process_crop always set masks
                    raise AssertionError("exact-mode candidates without masks")
                exact_masks.append(p.masks)
            masks = CompactMasks.concat(exact_masks, shape)
        return cls(
            np.concatenate([p.iou for p in parts]),
            np.concatenate([p.stability for p in parts]),
            np.concatenate([p.points for p in parts]),
            np.concatenate([p.boxes for p in parts]),
            masks,
            [x for p in parts for x in p.low],
            [x for p in parts for x in p.windows],
        )

    def subset(self, idx: np.ndarray) -> "Candidates":
        idx = np.asarray(idx, dtype=np.int64)
        return Candidates(
            self.iou[idx],
            self.stability[idx],
            self.points[idx],
            self.boxes[idx].reshape(-1, 4),
            self.masks.subset(idx) if self.masks is not None else None,
            [self.low[i] for i in idx] if self.low else [],
            [self.windows[i] for i in idx] if self.windows else [],
        )


def _stability(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``inter / union`` in float32 like the reference (0/0 -> NaN, silently)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(np.float32) / union.astype(np.float32)


def _ranges(on: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """Per candidate ``(r0, r1, c0, c1)`` inclusive bounds of True low-res pixels."""
    rows_any = np.asarray(on.any(axis=2))
    cols_any = np.asarray(on.any(axis=1))
    out: list[tuple[int, int, int, int] | None] = []
    for ra, ca in zip(rows_any, cols_any, strict=True):
        r = np.flatnonzero(ra)
        if r.size == 0:
            out.append(None)
            continue
        c = np.flatnonzero(ca)
        out.append((int(r[0]), int(r[-1]), int(c[0]), int(c[-1])))
    return out


def _edge_keep(ctx: CropContext, boxes: np.ndarray) -> np.ndarray:
    orig_h, orig_w = ctx.orig_size
    return ~box_near_crop_edge(boxes, ctx.crop_box, [0, 0, orig_w, orig_h])


# -- exact ---------------------------------------------------------------------------------------


def exact_batch(ctx: CropContext, low: np.ndarray, iou: np.ndarray, points: np.ndarray) -> Candidates:
    """Reference decisions on full-resolution logits, computed inside windows."""
    t = float(ctx.threshold)
    off = float(ctx.params.stability_score_offset)
    thr = float(ctx.params.stability_score_thresh)
    n = len(low)
    geom = ctx.geometry
    ranges = _ranges(low > (t - off))
    windows = [geom.window(*r) if r is not None else None for r in ranges]
    inter = np.zeros(n, np.int64)
    union = np.zeros(n, np.int64)
    # each candidate's mask is packed as soon as its stability is known, so a batch never
    # holds more than UPSCALE_CHUNK full-resolution windows
    packed: dict[int, CompactMasks] = {}
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, w in enumerate(windows):
        if w is not None:
            groups.setdefault(w, []).append(i)
    for w, members in groups.items():
        x0, y0, _, _ = w
        for s in range(0, len(members), UPSCALE_CHUNK):
            idx = members[s : s + UPSCALE_CHUNK]
            up = ctx.upscale(ctx.embedding, low[idx], window=w)
            for j, i in enumerate(idx):
                u = up[j]
                inter[i] = np.count_nonzero(u > (t + off))
                union[i] = np.count_nonzero(u > (t - off))
                if thr <= 0.0 or _stability(inter[i : i + 1], union[i : i + 1])[0] >= thr:
                    packed[i] = CompactMasks.from_windows(ctx.crop_shape, [((x0, y0), u > t)])
            del up
    stability = _stability(inter, union)
    keep = stability >= thr if thr > 0.0 else np.ones(n, dtype=bool)
    kept = np.flatnonzero(keep)
    masks = CompactMasks.concat(
        [packed.get(int(i)) or CompactMasks.from_windows(ctx.crop_shape, [((0, 0), np.zeros((0, 0), bool))]) for i in kept],
        ctx.crop_shape,
    )
    boxes = masks.boxes()
    edge = _edge_keep(ctx, boxes)
    sel = np.flatnonzero(edge)
    return Candidates(iou[kept][sel], stability[kept][sel], points[kept][sel], boxes[sel], masks.subset(sel))


# -- fast ----------------------------------------------------------------------------------------


def _crossing_boxes(lv: np.ndarray, low: np.ndarray, on: np.ndarray, ranges, t: float, geom: LowResGeometry) -> np.ndarray:
    """Boxes (image pixels, end-inclusive) of where the upsampled logits exceed ``t``,
    estimated from low-res threshold crossings along rows and columns."""
    out = np.zeros((len(lv), 4), dtype=np.float64)
    L_r, L_c = low.shape[1], low.shape[2]
    for i, rng in enumerate(ranges):
        if rng is None:
            continue
        r0, r1, c0, c1 = rng
        img = low[i]
        sides = []
        for axis, (a0, a1), g, size in ((1, (c0, c1), geom.cols, L_c), (0, (r0, r1), geom.rows, L_r)):
            line0 = on[i][:, a0] if axis == 1 else on[i][a0, :]
            idx0 = np.flatnonzero(line0)
            if a0 == 0:
                m_lo = 0.0
            else:
                v1 = img[idx0, a0] if axis == 1 else img[a0, idx0]
                v0 = img[idx0, a0 - 1] if axis == 1 else img[a0 - 1, idx0]
                frac = np.clip((t - v0) / np.maximum(v1 - v0, 1e-12), 0.0, 1.0)
                m_lo = float(np.min(g.low_center(a0 - 1 + frac)))
            line1 = on[i][:, a1] if axis == 1 else on[i][a1, :]
            idx1 = np.flatnonzero(line1)
            if a1 + 1 >= size:
                m_hi = float(g.resized - 1)
            else:
                v1 = img[idx1, a1] if axis == 1 else img[a1, idx1]
                v2 = img[idx1, a1 + 1] if axis == 1 else img[a1 + 1, idx1]
                beyond = v2 > t
                frac = np.clip((v1 - t) / np.maximum(v1 - v2, 1e-12), 0.0, 1.0)
                # low_center is annotated for floats but is plain arithmetic, so works on arrays
                m = np.where(beyond, g.resized - 1.0, g.low_center(a1 + frac))
                m_hi = float(np.max(m))
            lo = max(0, math.ceil(g.crossing_to_image(m_lo) - 1e-6))
            hi = min(g.image - 1, math.floor(g.crossing_to_image(m_hi) + 1e-6))
            sides.append((lo, max(lo, hi)))
        (x0, x1), (y0, y1) = sides
        out[i] = (x0, y0, x1, y1)
    return out


#: Fast mode: candidates whose low-res stability is this close to the threshold get the
#: exact (full-resolution, windowed) stability; observed low-res errors are below 0.04.
STABILITY_MARGIN = 0.05


def _exact_stability(ctx: CropContext, low: np.ndarray, t: float, off: float) -> np.ndarray:
    """Full-resolution stability scores of ``low (K, L, L)`` candidates (windowed)."""
    out = np.full(len(low), np.nan, dtype=np.float32)
    for i, rng in enumerate(_ranges(low > (t - off))):
        w = ctx.geometry.window(*rng) if rng is not None else None
        if w is None:
            continue
        u = ctx.upscale(ctx.embedding, low[i : i + 1], window=w)[0]
        out[i] = _stability(np.array([np.count_nonzero(u > t + off)]), np.array([np.count_nonzero(u > t - off)]))[0]
    return out


def fast_batch(ctx: CropContext, low: np.ndarray, iou: np.ndarray, points: np.ndarray) -> Candidates:
    """Decisions on low-resolution logits (exact stability near the threshold); keeps
    only each survivor's low-res window."""
    t = float(ctx.threshold)
    off = float(ctx.params.stability_score_offset)
    thr = float(ctx.params.stability_score_thresh)
    geom = ctx.geometry
    vr, vc = geom.rows.valid_low, geom.cols.valid_low
    lv = low[:, :vr, :vc]
    inter = np.count_nonzero(lv > (t + off), axis=(1, 2))
    union = np.count_nonzero(lv > (t - off), axis=(1, 2))
    stability = _stability(inter, union)
    if thr > 0.0:
        # near the threshold the low-res estimate decides wrongly now and then: those
        # candidates get the exact full-resolution stability (windowed)
        border = np.flatnonzero(np.abs(stability - thr) < STABILITY_MARGIN)
        if border.size:
            stability[border] = _exact_stability(ctx, low[border], t, off)
        keep = np.flatnonzero(stability >= thr)
    else:
        keep = np.arange(len(low))
    if keep.size == 0:
        return Candidates.concat([], ctx.crop_shape, exact=False)
    low_k, lv_k = low[keep], lv[keep]
    on = lv_k > t
    ranges = _ranges(on)
    boxes = _crossing_boxes(lv_k, low_k, on, ranges, t, geom)
    edge = np.flatnonzero(_edge_keep(ctx, boxes))
    lows: list[tuple[tuple[int, int], np.ndarray] | None] = []
    windows: list[tuple[int, int, int, int] | None] = []
    for j in edge:
        rng = ranges[j]
        w = geom.window(*rng) if rng is not None else None
        windows.append(w)
        if w is None:
            lows.append(None)
            continue
        c0, r0, c1, r1 = geom.low_window(w)
        lows.append(((c0, r0), low_k[j, r0:r1, c0:c1].astype(np.float16)))
    sel = keep[edge]
    return Candidates(iou[sel], stability[sel], points[sel], boxes[edge], None, lows, windows)


def fast_finish(ctx: CropContext, cands: Candidates) -> Candidates:
    """Upsample the (NMS-surviving) fast candidates inside their windows; masks and
    boxes then come from the full-resolution masks."""
    t = float(ctx.threshold)
    lh, lw = ctx.geometry.rows.low, ctx.geometry.cols.low
    items = []
    empty = ((0, 0), np.zeros((0, 0), dtype=bool))
    for stored, w in zip(cands.low, cands.windows, strict=True):
        if w is None or stored is None:
            items.append(empty)
            continue
        (c0, r0), arr = stored
        full = np.full((1, lh, lw), -1.0e4, dtype=np.float32)
        full[0, r0 : r0 + arr.shape[0], c0 : c0 + arr.shape[1]] = arr
        up = ctx.upscale(ctx.embedding, full, window=w)[0]
        items.append(((w[0], w[1]), up > t))
    masks = CompactMasks.from_windows(ctx.crop_shape, items)
    return Candidates(cands.iou, cands.stability, cands.points, masks.boxes(), masks)
