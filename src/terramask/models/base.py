"""The backend protocol every model family implements (DESIGN.md "Central types").

A backend turns an RGB uint8 image into an :class:`Embedding` once, then answers any
number of prompts from it. All coordinates crossing this boundary are pixels of the
image given to ``set_image`` (the ``scene``/``tile`` frame, ``x=col, y=row``); backends
convert to their own model input frame internally (SAM: longest side 1024).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts


@dataclass
class Embedding:
    """Encoder output for one image and one model.

    ``features`` is backend-specific (numpy arrays or tensors); ``image_size`` is the
    ``(rows, cols)`` of the image given to ``set_image``; ``input_size`` the ``(rows, cols)``
    after the backend's resize (before padding); ``key`` the cache key, when cached.
    """

    model: str
    features: Any
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every model adapter offers.

    ``predict`` returns a :class:`MaskSet` on the image grid: ``masks (K, H, W)`` bool,
    ``scores`` (predicted IoU), ``boxes`` xyxy, and the extra column
    ``low_res_logits (K, 256, 256) float32`` to pass back as a prior mask. With
    ``multimask=True`` it returns the candidates sorted by score (3 for SAM); otherwise
    one mask. Several boxes give one mask per box.
    """

    name: str

    def set_image(self, image: GeoImage | np.ndarray) -> Embedding: ...

    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet: ...


@runtime_checkable
class PointBatchDecoder(Protocol):
    """Optional capability used by automatic mask generation: decode many single-point
    prompts at once and return low-resolution results for filtering before upsampling.

    ``decode_points(embedding, coords (B, P, 2) float image pixels, labels (B, P) int)``
    -> ``(low_res_logits (B, K, h, w) float32, iou_predictions (B, K) float32)``.
    ``upscale_logits(embedding, low_res (N, h, w), window=None)`` -> logits ``(N, H, W)``
    on the image grid (or only inside ``window`` = ``(x0, y0, x1, y1)`` when given), using
    the model's own resize rule, so thresholding at ``mask_threshold`` gives masks.
    """

    mask_threshold: float

    def decode_points(self, embedding: Embedding, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None
    ) -> np.ndarray: ...


@runtime_checkable
class SelectivePointDecoder(Protocol):
    """Optional capability that makes automatic mask generation cheaper: decode
    single-point prompts in two stages, forming low-res logits only for the outputs the
    caller keeps.

    ``decode_selected(embedding, coords (B, 2) float image pixels, select)`` where
    ``select(iou (b, K) float32) -> (b, K) bool`` picks the outputs to form. Returns
    ``iou (B, K)`` float32, ``rows (M,)`` and ``ks (M,)`` int64 (prompt index, output
    index; prompt-major) and ``low_res (M, h, w)`` float32 logits of the selected outputs,
    equal to ``decode_points`` for those outputs.
    """

    def decode_selected(
        self, embedding: Embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class FeatureGrid:
    """An embedding's feature map on the image grid (see :class:`FeatureMap`).

    - ``features``: ``(C, h, w)`` float32, the cells that cover the image (cells over the
      model's padding dropped);
    - ``cell``: ``(rows_px, cols_px)``, image pixels per cell: cell ``(i, j)`` covers image
      rows ``[i * rows_px, (i + 1) * rows_px)`` and columns ``[j * cols_px, (j + 1) * cols_px)``
      (frame: pixels of the image given to ``set_image``, corner origin);
    - ``low_res_per_cell``: pixels of ``decode_points``' low-res logits per cell side, both
      grids starting at the same corner (SAM, SAM 2: 256 / 64 = 4), so a low-res mask
      pools onto the cells without upsampling.
    """

    features: np.ndarray
    cell: tuple[float, float]
    low_res_per_cell: int


@runtime_checkable
class FeatureMap(Protocol):
    """Optional capability used by find-similar (:mod:`terramask.models.concept.similar`):
    ``feature_map(embedding) -> FeatureGrid``, the encoder's features over the image."""

    def feature_map(self, embedding: Embedding) -> FeatureGrid: ...


def grid_feature_map(features: Any, image_size: tuple[int, int], input_size: tuple[int, int],
                     model_side: int, low_res: int) -> FeatureGrid:
    """:class:`FeatureGrid` of a square ``(1, C, g, g)`` encoder output.

    The model saw the image resized to ``input_size`` ``(rows, cols)`` and padded at the
    bottom/right to ``model_side`` pixels (SAM: longest side 1024; SAM 2: stretched to
    1024 x 1024, no padding); its low-res logits are ``low_res`` pixels on a side over the
    same padded square. Cells over the padding are dropped.
    """
    arr = np.asarray(features, dtype=np.float32)
    grid = arr.shape[-1]
    arr = arr.reshape(arr.shape[-3], arr.shape[-2], grid)
    stride = model_side / grid  # model pixels per cell
    rows, cols = image_size
    in_rows, in_cols = input_size
    h = min(grid, max(1, int(np.ceil(in_rows / stride))))
    w = min(grid, max(1, int(np.ceil(in_cols / stride))))
    cell = (stride * rows / in_rows, stride * cols / in_cols)
    return FeatureGrid(np.ascontiguousarray(arr[:, :h, :w]), cell, max(1, int(low_res) // grid))


@runtime_checkable
class Generator(Protocol):
    """Optional capability of backends that segment a whole image without prompts in
    their own way (the weight-free ``classic`` backend): ``generate(image) -> MaskSet``."""

    def generate(self, image: GeoImage | np.ndarray, **params: Any) -> MaskSet: ...


def as_rgb8(image: GeoImage | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 from a GeoImage (its own bands/stretch) or an array."""
    if isinstance(image, GeoImage):
        return image.to_rgb8()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        from terramask.core.errors import InputError

        raise InputError(f"backends take an HxWx3 uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def check_pixel_prompts(prompts: Prompts, model: str, low_res: int) -> None:
    """Reject what a SAM-family decoder cannot take, with one clear line.

    ``prompts`` must be :class:`Prompts` in image pixels (``scene``/``tile`` frame), carry
    no text, hold at least one point, box or prior mask, and a prior mask must be
    ``(1, low_res, low_res)`` (a previous result's ``low_res_logits``). ``model`` names the
    family in messages ("SAM", "SAM 2").
    """
    from terramask.core.errors import InputError, PromptError

    if not isinstance(prompts, Prompts):
        raise InputError(f"expected Prompts, got {type(prompts).__name__}")
    if prompts.frame not in ("scene", "tile"):
        raise PromptError(
            f"{model} takes prompts in image pixels, got frame {prompts.frame!r}; "
            "convert them with terramask's prompt helpers first"
        )
    if prompts.text:
        raise PromptError(f"{model} does not understand text prompts (got {prompts.text!r}); give points or boxes")
    if len(prompts.points) == 0 and len(prompts.boxes) == 0 and prompts.mask_logits is None:
        raise PromptError("no prompt given: add at least one point, box or prior mask")
    if prompts.mask_logits is not None and prompts.mask_logits.shape != (1, low_res, low_res):
        raise PromptError(
            f"prior mask logits must have shape (1, {low_res}, {low_res}) (a previous result's low_res_logits), "
            f"got {prompts.mask_logits.shape}"
        )


def upscale_arguments(
    low_res_logits: np.ndarray, low_res: int, image_size: tuple[int, int], window: tuple[int, int, int, int] | None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Checked inputs of ``upscale_logits``: ``(N, low_res, low_res)`` float32 logits and
    the window ``(x0, y0, x1, y1)`` (end exclusive; the whole ``(rows, cols)`` image when
    ``None``). Raises :class:`InputError` for a wrong shape or a window outside the image."""
    from terramask.core.errors import InputError

    arr = np.asarray(low_res_logits, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1:] != (low_res, low_res):
        raise InputError(f"upscale_logits needs low-res logits of shape (N, {low_res}, {low_res}), got {arr.shape}")
    rows, cols = image_size
    if window is None:
        return arr, (0, 0, cols, rows)
    x0, y0, x1, y1 = (int(v) for v in window)
    if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
        raise InputError(f"window {tuple(window)} is empty or outside the {cols}x{rows} image (x0, y0, x1, y1)")
    return arr, (x0, y0, x1, y1)
