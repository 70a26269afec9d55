"""Parameters of automatic mask generation, validated, with the reference defaults.

Every parameter of ``segment_anything.SamAutomaticMaskGenerator`` is here under the same
name and with the same default, so reference code and notebooks carry over unchanged.
Values are checked once, when :class:`AmgParams` is built: a wrong value raises
:class:`~terramask.core.errors.InputError` naming the parameter and the accepted range.

Point grids and crop boxes are built exactly as the reference builds them
(``segment_anything/utils/amg.py``): grids are normalised ``(x, y)`` in ``[0, 1]``, one
per crop layer; crop boxes are ``[x0, y0, x1, y1]`` image pixels, end exclusive.

Upper bounds, from the memory and time a value implies (the error states the estimate):

==================================  =========  =============================================
parameter                           most       why
==================================  =========  =============================================
``points_per_side``                 256        65,536 prompts per crop, 64x the default's
                                               1,024 (decoder time grows with the prompts;
                                               100,000 would mean 1e10 prompts and a 160 GB
                                               point grid)
``point_grids`` (each)              65,536     the same prompts per crop
``crop_n_layers``                   3          1 + 4 + 16 + 64 = 85 crops, each one encoder
                                               run and one full grid of prompts
all crops together                  1,048,576  prompts over every crop (1,024x the default)
``points_per_batch``                256        3 masks x 1024 x 1024 float32 per prompt in a
                                               batch: 3.2 GB at 256
==================================  =========  =============================================

Thresholds are bounded by their meaning (``[0, 1]``); ``stability_score_offset`` and
``min_mask_region_area`` cost nothing more when large, so they only need to be finite.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import product
from typing import Any, Mapping

import numpy as np

from terramask.core.errors import InputError

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
MODES = ("fast", "exact")
#: Where point prompts come from: the reference's regular grid, or one point per object
#: proposal (:mod:`terramask.pipelines.amg.proposals`).
PROMPT_MODES = ("grid", "objects")
#: terramask's own parameters, not the reference generator's (left out of :meth:`AmgParams.reference_kwargs`).
EXTENSIONS = ("prompts",)

#: Upper bounds (see the module docstring for what each one costs).
MAX_POINTS_PER_SIDE = 256
MAX_PROMPTS_PER_CROP = MAX_POINTS_PER_SIDE**2
MAX_CROP_N_LAYERS = 3
MAX_TOTAL_PROMPTS = 2**20
MAX_POINTS_PER_BATCH = 256
#: Bytes of mask logits one prompt holds in a batch: 3 masks upscaled to 1024 x 1024 float32.
BYTES_PER_BATCH_PROMPT = 3 * 1024 * 1024 * 4


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class AmgParams:
    """The reference generator's parameters (same names, same defaults).

    - ``points_per_side``: grid points along one side of each crop (``None`` when
      ``point_grids`` is given); ``points_per_batch``: prompts decoded together (memory,
      not results);
    - ``pred_iou_thresh``, ``stability_score_thresh`` in ``[0, 1]`` (0 disables the
      filter, as in the reference); ``stability_score_offset`` >= 0 shifts the logit
      cut-off for the stability score;
    - ``box_nms_thresh``, ``crop_nms_thresh`` box-IoU cut-offs in ``[0, 1]`` for duplicate
      removal within and between crops;
    - ``crop_n_layers`` >= 0 extra crop layers (layer ``i`` has ``(2**i)**2`` crops),
      ``crop_overlap_ratio`` in ``[0, 1)``, ``crop_n_points_downscale_factor`` >= 1;
    - ``point_grids``: explicit normalised ``(N, 2)`` grids, one per crop layer;
    - ``min_mask_region_area`` >= 0: fill holes and remove islands smaller than this
      (pixels) and re-run NMS;
    - ``output_mode``: ``binary_mask``, ``uncompressed_rle`` or ``coco_rle`` for records;
    - ``prompts`` (terramask's own, not the reference's): ``grid`` (the reference's point
      grid) or ``objects`` (one point per weight-free object proposal of each crop, at
      most the grid's count: :mod:`terramask.pipelines.amg.proposals`).
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: tuple[np.ndarray, ...] | None = field(default=None, compare=False)
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    prompts: str = "grid"

    def __post_init__(self) -> None:
        if self.point_grids is not None:
            object.__setattr__(self, "point_grids", _check_grids(self.point_grids))
        _validate(self)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> "AmgParams":
        """Build from a dict (e.g. a preset) plus overrides; ``None`` overrides are ignored
        except ``points_per_side=None`` alongside ``point_grids``. Unknown names raise."""
        merged = dict(values or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("point_grids") is not None and overrides.get("points_per_side") is None:
            merged["points_per_side"] = None
        unknown = sorted(set(merged) - set(cls.names()))
        if unknown:
            raise InputError(f"unknown automatic-mask parameter(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        return cls(**merged)

    def replace(self, **changes: Any) -> "AmgParams":
        """A copy with some parameters changed (validated again)."""
        return replace(self, **changes)

    # -- derived -----------------------------------------------------------------------
    def layer_grids(self) -> list[np.ndarray]:
        """One ``(N, 2)`` float64 normalised grid per crop layer (``crop_n_layers + 1``)."""
        if self.point_grids is not None or self.points_per_side is None:  # validation: exactly one is set
            return [np.asarray(g, dtype=np.float64) for g in self.point_grids or ()]
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor)

    def reference_kwargs(self) -> dict[str, Any]:
        """:meth:`to_dict` without terramask's own parameters (:data:`EXTENSIONS`): the
        keyword arguments of the reference ``SamAutomaticMaskGenerator``."""
        return {k: v for k, v in self.to_dict().items() if k not in EXTENSIONS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (grids as nested lists)."""
        out = asdict(self)
        if self.point_grids is not None:
            out["point_grids"] = [np.asarray(g).tolist() for g in self.point_grids]
        return out


def _check_grids(grids: Any) -> tuple[np.ndarray, ...]:
    if isinstance(grids, np.ndarray) and grids.ndim == 2:
        raise InputError("point_grids must be a list of (N, 2) arrays, one per crop layer; wrap a single grid in a list")
    try:
        arrays = tuple(np.asarray(g, dtype=np.float64) for g in grids)
    except (TypeError, ValueError):
        raise InputError("point_grids must be a list of (N, 2) arrays of numbers in [0, 1]") from None
    for i, g in enumerate(arrays):
        if g.ndim != 2 or g.shape[1] != 2:
            raise InputError(f"point_grids[{i}] must have shape (N, 2), got {g.shape}")
        if g.shape[0] == 0:
            raise InputError(f"point_grids[{i}] has zero points; every crop layer needs at least one point")
        if not np.all(np.isfinite(g)) or g.min() < 0 or g.max() > 1:
            raise InputError(f"point_grids[{i}] must hold normalised coordinates in [0, 1]")
    for g in arrays:
        g.setflags(write=False)
    return arrays


def _validate(p: AmgParams) -> None:
    if (p.points_per_side is None) == (p.point_grids is None):
        raise InputError("give exactly one of points_per_side or point_grids (both or neither were given)")
    if p.points_per_side is not None:
        if not _is_int(p.points_per_side) or p.points_per_side < 1:
            raise InputError(f"points_per_side must be a positive integer, got {p.points_per_side!r}")
        if p.points_per_side > MAX_POINTS_PER_SIDE:
            n = int(p.points_per_side) ** 2
            raise InputError(
                f"points_per_side={p.points_per_side} means {_count(n)} prompts per crop (a {_size(n * 16)} point "
                f"grid, {n / 1024:,.0f}x the default's decoder work); the most is {MAX_POINTS_PER_SIDE} "
                f"({MAX_PROMPTS_PER_CROP:,} prompts per crop)"
            )
    if not _is_int(p.points_per_batch) or p.points_per_batch < 1:
        raise InputError(f"points_per_batch must be a positive integer, got {p.points_per_batch!r}")
    if p.points_per_batch > MAX_POINTS_PER_BATCH:
        raise InputError(
            f"points_per_batch={p.points_per_batch} means about {_size(p.points_per_batch * BYTES_PER_BATCH_PROMPT)} "
            f"of mask logits per batch (3 masks x 1024 x 1024 float32 per prompt); the most is "
            f"{MAX_POINTS_PER_BATCH} ({_size(MAX_POINTS_PER_BATCH * BYTES_PER_BATCH_PROMPT)}); "
            "the batch size changes memory, not results"
        )
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
        value = getattr(p, name)
        if not _is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    if not _is_number(p.stability_score_offset) or not math.isfinite(p.stability_score_offset) or p.stability_score_offset < 0:
        raise InputError(f"stability_score_offset must be a non-negative number, got {p.stability_score_offset!r}")
    if not _is_int(p.crop_n_layers) or p.crop_n_layers < 0:
        raise InputError(f"crop_n_layers must be a non-negative integer, got {p.crop_n_layers!r}")
    if p.crop_n_layers > MAX_CROP_N_LAYERS:
        raise InputError(
            f"crop_n_layers={p.crop_n_layers} means {_count(_n_crops(int(p.crop_n_layers)))} crops, each an encoder "
            f"run and a full grid of prompts; the most is {MAX_CROP_N_LAYERS} ({_n_crops(MAX_CROP_N_LAYERS)} crops)"
        )
    if not _is_number(p.crop_overlap_ratio) or not math.isfinite(p.crop_overlap_ratio) or not 0.0 <= p.crop_overlap_ratio < 1.0:
        raise InputError(f"crop_overlap_ratio must be a number in [0, 1), got {p.crop_overlap_ratio!r}")
    if not _is_int(p.crop_n_points_downscale_factor) or p.crop_n_points_downscale_factor < 1:
        raise InputError(
            f"crop_n_points_downscale_factor must be a positive integer, got {p.crop_n_points_downscale_factor!r}"
        )
    if not _is_number(p.min_mask_region_area) or not math.isfinite(p.min_mask_region_area) or p.min_mask_region_area < 0:
        raise InputError(f"min_mask_region_area must be a non-negative number of pixels, got {p.min_mask_region_area!r}")
    if p.output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {p.output_mode!r}")
    if p.prompts not in PROMPT_MODES:
        raise InputError(f"prompts must be one of {', '.join(PROMPT_MODES)}, got {p.prompts!r}")
    if p.point_grids is not None:
        if len(p.point_grids) < p.crop_n_layers + 1:
            raise InputError(
                f"point_grids has {len(p.point_grids)} grid(s) but crop_n_layers={p.crop_n_layers} needs "
                f"{p.crop_n_layers + 1} (one per layer, the full image first)"
            )
        for i, grid in enumerate(p.point_grids):
            if len(grid) > MAX_PROMPTS_PER_CROP:
                raise InputError(f"point_grids[{i}] has {len(grid):,} points, more than the {MAX_PROMPTS_PER_CROP:,} "
                                 "prompts per crop allowed")
        per_layer = [len(g) for g in p.point_grids[: p.crop_n_layers + 1]]
    else:
        per_layer = []
        for layer in range(p.crop_n_layers + 1):
            n = int(p.points_per_side / (p.crop_n_points_downscale_factor**layer))
            if n < 1:
                raise InputError(
                    f"points_per_side={p.points_per_side} with crop_n_points_downscale_factor="
                    f"{p.crop_n_points_downscale_factor} leaves zero points in crop layer {layer}; "
                    f"lower crop_n_layers or the downscale factor"
                )
            per_layer.append(n * n)
    total = sum(n * 4**layer for layer, n in enumerate(per_layer))
    if total > MAX_TOTAL_PROMPTS:
        raise InputError(
            f"these settings mean {_count(total)} prompts over {_n_crops(int(p.crop_n_layers))} crops "
            f"({total / 1024:,.0f}x the default's decoder work); the most is {MAX_TOTAL_PROMPTS:,}: lower "
            "points_per_side or crop_n_layers, or raise crop_n_points_downscale_factor"
        )


def _n_crops(layers: int) -> int:
    """Crops of ``layers`` crop layers plus the whole image: ``1 + 4 + 16 + ...``."""
    return sum(4**i for i in range(layers + 1))


def _count(n: int) -> str:
    """``1,024`` for small counts, ``1e10`` for huge ones."""
    if n < 10**7:
        return f"{n:,}"
    mantissa, exponent = f"{n:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _size(nbytes: float) -> str:
    """Bytes as ``3.2 GB`` / ``160 GB`` / ``1.6e+05 GB`` (decimal units)."""
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if nbytes < scale * 1000 or unit == "GB":
            value = nbytes / scale
            return f"{value:.3g} {unit}" if value < 1e6 else f"{value:.2g} {unit}"
    return f"{nbytes:.3g} B"


def check_mode(mode: str) -> str:
    """``"fast"`` or ``"exact"``, else :class:`InputError`."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


# -- grids and crops, as the reference builds them ------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` float64 points evenly spaced in ``[0, 1]^2``, x varying fastest."""
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """Grids for layers ``0..n_layers``: layer ``i`` has ``int(n / scale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes ``[x0, y0, x1, y1]`` (end exclusive) and their layer index; the whole
    image first, then ``(2**(i+1))**2`` overlapping crops for each layer ``i``."""
    crop_boxes, layer_idxs = [], []
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes.append([0, 0, im_w, im_h])
    layer_idxs.append(0)

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        xs0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        ys0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(xs0, ys0):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs
