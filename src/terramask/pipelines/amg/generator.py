"""Automatic mask generation ("segment everything") on the backend protocol.

The algorithm is the reference ``SamAutomaticMaskGenerator``'s, step for step: a grid of
single-point prompts per crop (the whole image, then ``crop_n_layers`` layers of
overlapping crops, each encoded on its own), three candidate masks per point, filters on
predicted IoU, stability score and crop edges, box NMS within each crop, NMS between crops
preferring smaller crops, then optional hole/island removal (``min_mask_region_area``)
with a last NMS. Parameters: :class:`~terramask.pipelines.amg.params.AmgParams`.
With ``prompts="objects"`` the grid of each crop is replaced by one point per object
proposal (:mod:`terramask.pipelines.amg.proposals`, MobileSAMv2's idea without its
detector); everything after the prompts is unchanged.

Two modes (:func:`generate`):

- ``exact`` makes the reference's decisions on full-resolution logits and returns the
  same masks (tested against ``segment_anything`` as a set: same count, IoU >= 0.99,
  same scores within float tolerance). It is still much cheaper than the reference: the
  decoder skips mask decoding for prompts whose three predicted IoUs all fail
  ``pred_iou_thresh``, logits are upsampled only inside the window where they can
  matter, masks are stored as packed windows and encoded to RLE from them.
- ``fast`` (default) makes the stability, crop-edge and NMS decisions on the decoder's
  low-resolution logits (the stability of candidates within 0.05 of the threshold is
  computed exactly) and upsamples only the masks that survive, each inside its box. Its
  ``stability_score`` is the low-res estimate for the other candidates.

Backends with the :class:`~terramask.models.base.SelectivePointDecoder` capability (SAM
v1: SAM, MobileSAM) decode in two stages (masks only for the outputs that pass the IoU
filter, on the one SAM decoder); other :class:`~terramask.models.base.PointBatchDecoder`
backends use their ``decode_points``. Backends without point decoding but with their own
``generate`` (the weight-free ``classic`` backend) are used through it.

Memory never holds full-image stacks: one batch of low-res logits (``B x 3 x 256 x 256``
float32) and compact masks. Only :meth:`AmgResult.to_maskset` (and records in
``binary_mask`` mode) materialise one ``H x W`` bool array per kept mask.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from affine import Affine

from terramask.core.boxes import xyxy_to_xywh
from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.rle import to_coco_rle
from terramask.models.base import as_rgb8
from terramask.pipelines.amg.candidates import Candidates, CropContext, exact_batch, fast_batch, fast_finish
from terramask.pipelines.amg.geometry import LowResGeometry
from terramask.pipelines.amg.masks import CompactMasks
from terramask.pipelines.amg.params import OUTPUT_MODES, AmgParams, check_mode, generate_crop_boxes
from terramask.pipelines.amg.postprocess import nms, postprocess_small_regions
from terramask.pipelines.amg.proposals import crop_prompts

log = logging.getLogger(__name__)

#: Decoder choices: ``auto`` = folded SAM decoder when the backend has one, else the
#: backend's ``decode_points``; ``backend`` = always ``decode_points``.
DECODERS = ("auto", "backend")


@dataclass
class AmgResult:
    """Kept masks of one image, compact; columns in the reference's record order.

    ``masks`` on the image grid; ``scores`` predicted IoU ``(N,)`` float32;
    ``stability (N,)`` float32; ``points (N, 2)`` float64 image ``(x, y)`` of the prompt;
    ``crop_boxes (N, 4)`` int64 xyxy (end exclusive); ``boxes (N, 4)`` float64 xyxy
    end-inclusive. ``timings`` in seconds: ``encoder``, ``decoder``, ``total``.
    """

    masks: CompactMasks
    scores: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray
    boxes: np.ndarray
    transform: Affine | None = None
    crs: str | None = None
    mode: str = "fast"
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def shape(self) -> tuple[int, int]:
        return self.masks.shape

    @property
    def areas(self) -> np.ndarray:
        return self.masks.areas

    def subset(self, idx) -> "AmgResult":
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return AmgResult(
            self.masks.subset(idx),
            self.scores[idx],
            self.stability[idx],
            self.points[idx].reshape(-1, 2),
            self.crop_boxes[idx].reshape(-1, 4),
            self.boxes[idx].reshape(-1, 4),
            self.transform,
            self.crs,
            self.mode,
            dict(self.timings),
            {k: v[idx] for k, v in self.extras.items()},
        )

    def to_maskset(self) -> MaskSet:
        """A :class:`MaskSet` with dense masks and the columns ``stability_score``,
        ``point_coords (N, 2)``, ``crop_box (N, 4)`` (xyxy) and ``area``."""
        return MaskSet(
            self.masks.to_dense(),
            self.scores,
            self.boxes,
            {
                "stability_score": self.stability.astype(np.float32),
                "point_coords": self.points.astype(np.float64),
                "crop_box": self.crop_boxes.astype(np.int64),
                "area": self.masks.areas.astype(np.int64),
                **self.extras,
            },
            transform=self.transform,
            crs=self.crs,
        )

    @classmethod
    def from_maskset(cls, ms: MaskSet, mode: str = "fast") -> "AmgResult":
        """Wrap a dense :class:`MaskSet` (e.g. from a backend's own ``generate``); missing
        reference columns get neutral values: stability = score, point = box centre,
        crop box = the whole image."""
        n = len(ms)
        h, w = ms.shape
        ex = ms.extras
        stability = np.asarray(ex.get("stability_score", ms.scores), dtype=np.float32).reshape(n)
        if "point_coords" in ex:
            points = np.asarray(ex["point_coords"], dtype=np.float64).reshape(n, -1)[:, :2] if n else np.zeros((0, 2))
        else:
            b = ms.boxes
            points = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) if n else np.zeros((0, 2))
        crop = np.asarray(ex.get("crop_box", np.tile([0, 0, w, h], (n, 1))), dtype=np.int64).reshape(n, 4)
        others = {k: np.asarray(v) for k, v in ex.items() if k not in ("stability_score", "point_coords", "crop_box", "area")}
        others = {k: v for k, v in others.items() if v.ndim <= 2}
        masks = CompactMasks.from_dense(ms.masks)
        return cls(masks, ms.scores.astype(np.float32), stability, points, crop, masks.boxes(), ms.transform, ms.crs, mode, {}, others)


# -- decoding ------------------------------------------------------------------------------------


class _BackendDecoder:
    """Two-stage decode through the protocol's ``decode_points`` (decodes everything)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def decode(self, embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]):
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        labels = np.ones((len(coords), 1), dtype=np.int64)
        low, iou = self.backend.decode_points(embedding, coords[:, None, :], labels)
        low = np.asarray(low, dtype=np.float32)
        iou = np.asarray(iou, dtype=np.float32)
        if low.ndim != 4 or iou.shape != low.shape[:2] or low.shape[0] != len(coords):
            raise ModelError(
                f"{getattr(self.backend, 'name', 'backend')}.decode_points returned logits {low.shape} and scores {iou.shape} "
                f"for {len(coords)} prompts; expected (B, K, h, w) and (B, K)"
            )
        keep = np.asarray(select(iou), dtype=bool).reshape(iou.shape)
        rows, ks = np.nonzero(keep)
        return iou, rows, ks, low[rows, ks]


def _decoder_for(backend: Any, decoder: str):
    if decoder not in DECODERS:
        raise InputError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "auto" and callable(getattr(backend, "decode_selected", None)):
        return _SelectiveDecoder(backend)
    return _BackendDecoder(backend)


class _SelectiveDecoder:
    """Point prompts through the backend's two-stage ``decode_selected`` (the
    :class:`~terramask.models.base.SelectivePointDecoder` capability)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def decode(self, embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]):
        return self.backend.decode_selected(embedding, coords, select)


def supports_point_decoding(backend: Any) -> bool:
    return callable(getattr(backend, "decode_points", None)) and callable(getattr(backend, "upscale_logits", None))


# -- the generator ---------------------------------------------------------------------------------


def _process_crop(backend, decoder, rgb, crop_box, grid, orig_size, params: AmgParams, mode: str, timings,
                  on_batch: Callable[[int], None] | None = None) -> Candidates:
    x0, y0, x1, y1 = crop_box
    crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    t0 = time.perf_counter()
    embedding = backend.set_image(crop)
    timings["encoder"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    h, w = crop.shape[:2]
    points_all = grid * np.array([w, h])[None, :]
    model_size = int(getattr(backend, "img_size", 1024))
    threshold = float(getattr(backend, "mask_threshold", 0.0))
    iou_thr = float(params.pred_iou_thresh)
    ctx: CropContext | None = None
    parts: list[Candidates] = []

    def select(iou: np.ndarray) -> np.ndarray:
        return iou > iou_thr if iou_thr > 0.0 else np.ones(iou.shape, dtype=bool)

    for start in range(0, len(points_all), params.points_per_batch):
        points = points_all[start : start + params.points_per_batch]
        iou, rows, ks, low = decoder.decode(embedding, points, select)
        if on_batch is not None:
            on_batch(len(points))
        if len(rows) == 0:
            continue
        if ctx is None:
            geom = LowResGeometry.of(embedding.image_size, embedding.input_size, low.shape[1:], model_size)
            ctx = CropContext(backend.upscale_logits, embedding, geom, tuple(crop_box), orig_size, threshold, params)
        handler = exact_batch if mode == "exact" else fast_batch
        parts.append(handler(ctx, low, iou[rows, ks], points[rows]))
    cands = Candidates.concat(parts, (h, w), exact=(mode == "exact"))
    if len(cands):
        keep = nms(cands.boxes, cands.iou, params.box_nms_thresh)
        cands = cands.subset(keep)
        if mode == "fast":
            if ctx is None:  # set by the first batch with candidates, and there were some
                raise AssertionError("candidates without a crop context")
            cands = fast_finish(ctx, cands)
    elif cands.masks is None:
        cands.masks = CompactMasks.empty((h, w))
    timings["decoder"] += time.perf_counter() - t0
    # back to the image frame
    offset = np.array([x0, y0, x0, y0], dtype=np.float64)
    cands.boxes = cands.boxes + offset
    cands.points = cands.points + offset[:2]
    if cands.masks is None:  # exact_batch, fast_finish and the empty case all set masks
        raise AssertionError("crop candidates without masks")
    cands.masks = cands.masks.shifted(x0, y0, orig_size)
    return cands


def generate_compact(
    backend: Any,
    image: GeoImage | np.ndarray,
    params: AmgParams | None = None,
    mode: str = "fast",
    *,
    decoder: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> AmgResult:
    """Automatic masks of one image, kept compact (see :class:`AmgResult`).

    ``image``: a :class:`GeoImage` (its ``to_rgb8()``; transform and CRS carried to the
    result) or an ``(H, W, 3)`` uint8 array. ``params`` (default: reference defaults) with
    ``overrides`` applied by name. ``mode``: ``fast`` or ``exact``. ``progress(done,
    total)`` is called after each batch of point prompts (counts of prompts, all crops).
    """
    mode = check_mode(mode)
    params = params if params is not None else AmgParams()
    if not isinstance(params, AmgParams):
        raise InputError(f"params must be AmgParams, got {type(params).__name__}")
    if overrides:
        unknown = sorted(set(overrides) - set(AmgParams.names()))
        if unknown:
            raise InputError(f"unknown automatic-mask parameter(s) {', '.join(unknown)}; known: {', '.join(AmgParams.names())}")
        params = params.replace(**overrides)
    transform = image.transform if isinstance(image, GeoImage) else None
    crs = image.crs if isinstance(image, GeoImage) else None
    t_start = time.perf_counter()
    if not supports_point_decoding(backend):
        raise ModelError(
            f"backend {getattr(backend, 'name', type(backend).__name__)!r} cannot decode point prompts; segment it "
            "with terramask.pipelines.scene.segmenters.segment_function, which also serves backends that segment "
            "on their own"
        )
    rgb = as_rgb8(image)
    orig_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    crop_boxes, layer_idxs = generate_crop_boxes(orig_size, params.crop_n_layers, params.crop_overlap_ratio)
    grids = params.layer_grids()
    dec = _decoder_for(backend, decoder)
    timings = {"encoder": 0.0, "decoder": 0.0, "postprocess": 0.0}
    t0 = time.perf_counter()
    crop_grids = [crop_prompts(params.prompts, rgb, box, grids[layer])
                  for box, layer in zip(crop_boxes, layer_idxs, strict=True)]
    timings["prompts"] = time.perf_counter() - t0
    parts, crop_cols = [], []
    total = sum(len(g) for g in crop_grids)
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    for box, grid in zip(crop_boxes, crop_grids, strict=True):
        cands = _process_crop(backend, dec, rgb, box, grid, orig_size, params, mode, timings, on_batch)
        parts.append(cands)
        crop_cols.append(np.tile(np.asarray(box, dtype=np.int64), (len(cands), 1)))
    t0 = time.perf_counter()
    data = Candidates.concat(parts, orig_size, exact=True)
    crops = np.concatenate(crop_cols).reshape(-1, 4)
    if len(crop_boxes) > 1 and len(data):
        area = ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])).astype(np.float32)
        keep = nms(data.boxes, np.float32(1.0) / area, params.crop_nms_thresh)
        data, crops = data.subset(keep), crops[keep]
    if data.masks is None:  # Candidates.concat(..., exact=True) always builds masks
        raise AssertionError("merged candidates without masks")
    result = AmgResult(data.masks, data.iou, data.stability, data.points, crops, data.boxes, transform, crs, mode)
    if params.min_mask_region_area > 0 and len(result):
        keep, masks, boxes = postprocess_small_regions(
            result.masks, result.boxes, params.min_mask_region_area, max(params.box_nms_thresh, params.crop_nms_thresh)
        )
        result.masks, result.boxes = masks, boxes
        result = result.subset(keep)
    timings["postprocess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    result.timings = timings
    log.info(
        "automatic masks (%s): %d masks from %d crop(s) in %.2fs (encoder %.2fs)",
        mode, len(result), len(crop_boxes), timings["total"], timings["encoder"],
    )
    return result


def from_own_masks(masks: MaskSet, image: GeoImage | np.ndarray, params: AmgParams | None = None,
                   mode: str = "fast") -> AmgResult:
    """The generator's result for ``masks`` that a backend made on its own (the
    ``Generator`` capability, e.g. ``classic``): scores stand in for stability, the
    box centre for the point, the whole image is the crop; ``min_mask_region_area``
    post-processing as in generation. ``image`` gives the grid (transform, CRS).
    """
    t_start = time.perf_counter()
    mode = check_mode(mode)
    params = params if params is not None else AmgParams()
    if not isinstance(masks, MaskSet):
        raise ModelError(f"a backend's generate returned {type(masks).__name__}, expected a MaskSet")
    result = AmgResult.from_maskset(masks, mode=mode)
    if isinstance(image, GeoImage):
        result.transform, result.crs = image.transform, image.crs
    if params.min_mask_region_area > 0 and len(result):
        keep, kept_masks, boxes = postprocess_small_regions(
            result.masks, result.boxes, params.min_mask_region_area, max(params.box_nms_thresh, params.crop_nms_thresh)
        )
        result.masks, result.boxes = kept_masks, boxes
        result = result.subset(keep)
    elapsed = time.perf_counter() - t_start
    result.timings = {"encoder": 0.0, "decoder": elapsed, "total": elapsed}
    return result


def generate(
    backend: Any,
    image: GeoImage | np.ndarray,
    params: AmgParams | None = None,
    mode: str = "fast",
    **kwargs: Any,
) -> MaskSet:
    """Automatic masks of one image as a :class:`MaskSet` (dense ``(N, H, W)`` masks,
    ``scores`` = predicted IoU, ``boxes`` xyxy end-inclusive, columns
    ``stability_score``, ``point_coords``, ``crop_box`` (xyxy), ``area``). See
    :func:`generate_compact` for the arguments; use it for large images or many masks."""
    return generate_compact(backend, image, params, mode, **kwargs).to_maskset()


# -- records -----------------------------------------------------------------------------------------


def _xywh_list(box) -> list:
    vals = xyxy_to_xywh(np.asarray(box, dtype=np.float64).reshape(1, 4))[0]
    return [int(v) if float(v).is_integer() else float(v) for v in vals]


def records(data: AmgResult | MaskSet, output_mode: str = "binary_mask") -> list[dict]:
    """The reference generator's records: ``segmentation`` (per ``output_mode``:
    ``binary_mask`` ``(H, W)`` bool, ``uncompressed_rle`` or ``coco_rle``), ``area``,
    ``bbox`` (XYWH of the end-inclusive box, as the reference), ``predicted_iou``,
    ``point_coords`` (``[[x, y]]``), ``stability_score``, ``crop_box`` (XYWH)."""
    if output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
    if isinstance(data, MaskSet):
        data = AmgResult.from_maskset(data)
    if not isinstance(data, AmgResult):
        raise InputError(f"records() takes an AmgResult or a MaskSet, got {type(data).__name__}")
    out = []
    for i in range(len(data)):
        if output_mode == "binary_mask":
            seg: Any = data.masks.dense(i)
        else:
            seg = data.masks.rle(i)
            if output_mode == "coco_rle":
                seg = to_coco_rle(seg)
        out.append(
            {
                "segmentation": seg,
                "area": int(data.masks.areas[i]),
                "bbox": _xywh_list(data.boxes[i]),
                "predicted_iou": float(data.scores[i]),
                "point_coords": [[float(v) for v in data.points[i]]],
                "stability_score": float(data.stability[i]),
                "crop_box": _xywh_list(data.crop_boxes[i]),
            }
        )
    return out
