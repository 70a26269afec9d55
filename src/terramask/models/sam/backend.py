"""SAM backend: the official ``segment_anything`` model behind terramask's Backend protocol.

Frames: every coordinate crossing this module's public API is a pixel ``(x, y)`` of the
image given to :meth:`SamBackend.set_image` (the ``scene``/``tile`` frame). Internally
SAM works in the ``model`` frame: the image resized so its longest side is
``img_size`` (1024) by ``ResizeLongestSide`` and padded at the bottom/right to a square.

The model is the official ``segment_anything`` modules (``ImageEncoderViT``,
``PromptEncoder``, ``MaskDecoder``) built for the architecture read from the checkpoint
(:mod:`terramask.models.sam.checkpoint`), so ViT-B/L/H checkpoints and small test
configurations load through the same code, and results equal those of the official
``SamPredictor`` for the same weights and inputs. Three parts are terramask's own, each
tested against the official computation: the encoder's global attention in chunks
(:mod:`~terramask.models.sam.encoder_attention`, a fraction of the memory), the mask
decoder (:mod:`~terramask.models.sam.decoder`) and the upsampling of low-res logits
(:mod:`terramask.models.upscale`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from terramask.core.errors import CheckpointMismatchError, InputError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import (
    Embedding,
    FeatureGrid,
    as_rgb8,
    check_pixel_prompts,
    grid_feature_map,
    upscale_arguments,
)
from terramask.models.sam import decoder as sam_decoder
from terramask.models.sam.checkpoint import (  # noqa: F401  (re-exported: the backend's public names)
    OFFICIAL_ARCHS,
    PROMPT_DIM,
    EncoderArch,
    SamArch,
    build_sam_model,
    infer_arch,
    normalize_arch_name,
    preprocess_shape,
)
from terramask.models.sam.encoder_attention import chunk_global_attention
from terramask.models.torch_utils import load_state_dict, resolve_device, torch_module
from terramask.models.upscale import Upscaler

log = logging.getLogger(__name__)


def _writable(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when writable, else a copy (torch refuses to wrap read-only memory)."""
    return arr if arr.flags.writeable else arr.copy()


class SamBackend:
    """SAM (ViT-B/L/H or any ``segment_anything`` ViT configuration) as a terramask backend.

    Implements :class:`~terramask.models.base.Backend` and
    :class:`~terramask.models.base.PointBatchDecoder`. Build it with
    :meth:`from_checkpoint`. ``mask_threshold`` is 0.0 (logits > 0 are mask).
    """

    mask_threshold: float = 0.0

    #: prompts decoded per forward pass in :meth:`decode_points`. Small chunks keep the
    #: per-prompt image tensors (4 MB each) in cache: measured on 1 CPU thread, 4 costs
    #: ~1.2x and 16 ~2x the per-prompt time of 1-2.
    decode_chunk: int = 4

    def __init__(
        self,
        model,
        arch: EncoderArch,
        name: str | None = None,
        device: str = "cpu",
        source: str | None = None,
        lean_decoder: bool = True,
    ) -> None:
        self._torch = torch_module()
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.arch = arch
        self.name = name or f"sam-{arch.name.replace('_', '-')}"
        self.source = source
        self.img_size = arch.img_size
        #: decode with :mod:`terramask.models.sam.decoder` (per-image work reused across
        #: prompts); ``False`` runs the official ``MaskDecoder.forward``. Equal results.
        self.lean_decoder = lean_decoder
        self._lock = threading.Lock()
        self._last: tuple[Any, Any, Any] | None = None  # (features object, tensor, ImageState)
        with self._torch.inference_mode():
            # constant for a model: the positional encoding of the embedding grid
            self._dense_pe = self.model.prompt_encoder.get_dense_pe()
        self._upscaler = Upscaler(arch.low_res, arch.img_size, "torch", self.device)
        # a ViT encoder's global-attention blocks attend in chunks of query rows: same
        # embeddings, a fraction of the transient memory (no-op for other encoders)
        chunk_global_attention(self.model.image_encoder)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, arch: str | None = None, device: str = "cpu", name: str | None = None
    ) -> "SamBackend":
        """Load a SAM checkpoint (a plain state dict, e.g. the official ``sam_vit_b_01ec64.pth``).

        The architecture is read from the tensors; when ``arch`` (``vit_b``/``vit_l``/
        ``vit_h``) is given and the file holds another one, raises
        :class:`CheckpointMismatchError` naming the file, the expected and the found
        architecture. Loading never unpickles objects (``weights_only=True``).
        """
        t0 = time.perf_counter()
        path = Path(path)
        state = load_state_dict(path, what="SAM checkpoint", family="sam")
        found = infer_arch(state, source=f"SAM checkpoint {path}")
        if arch is not None:
            expected = normalize_arch_name(arch)
            if found.name != expected:
                raise CheckpointMismatchError(
                    f"SAM checkpoint {path} holds a {found.name} model, but {expected} was requested"
                )
        model = build_sam_model(found, state, source=f"SAM checkpoint {path}")
        backend = cls(model, found, name=name, device=device, source=str(path))
        log.info("loaded SAM %s from %s on %s in %.2fs", found.name, path, backend.device, time.perf_counter() - t0)
        return backend

    def __repr__(self) -> str:
        return f"SamBackend(name={self.name!r}, arch={self.arch.name!r}, device={str(self.device)!r})"

    # -- image ------------------------------------------------------------------------
    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Encode an image once.

        ``image``: a :class:`GeoImage` (its ``to_rgb8``) or an ``(H, W, 3)`` uint8 array.
        Returns an :class:`Embedding` whose ``features`` is a ``(1, 256, 64, 64)`` float32
        numpy array, ``image_size`` the image ``(rows, cols)``, ``input_size`` the
        ``(rows, cols)`` after resizing the longest side to 1024; ``extras`` carry the
        image's ``transform`` and ``crs`` so mask sets come back georeferenced.
        """
        torch = self._torch
        transforms = require("segment_anything.utils.transforms", "sam", "segment-anything")
        rgb = as_rgb8(image)
        rows, cols = int(rgb.shape[0]), int(rgb.shape[1])
        if rows < 1 or cols < 1:
            raise InputError(f"cannot encode an empty image of shape {rgb.shape}")
        t0 = time.perf_counter()
        resized = transforms.ResizeLongestSide(self.img_size).apply_image(rgb)
        with torch.inference_mode():
            x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            x = self.model.preprocess(x)
            features = self.model.image_encoder(x)
        extras: dict[str, Any] = {"arch": self.arch.name}
        if isinstance(image, GeoImage):
            extras["transform"] = image.transform
            extras["crs"] = image.crs
        log.debug("SAM %s encoded %dx%d image in %.3fs", self.name, rows, cols, time.perf_counter() - t0)
        return Embedding(
            model=self.name,
            features=features.float().cpu().numpy(),
            image_size=(rows, cols),
            input_size=(int(resized.shape[0]), int(resized.shape[1])),
            extras=extras,
        )

    def _image(self, embedding: Embedding):
        """``(features tensor on device, ImageState or None)`` for an embedding.

        The last embedding's tensors are kept (keyed by the identity of its ``features``
        object, which the backend holds), so repeated clicks on one image convert and
        project its features once.
        """
        self._check(embedding)
        last = self._last
        if last is not None and last[0] is embedding.features and (last[2] is not None) == bool(self.lean_decoder):
            return last[1], last[2]
        feats = self._features(embedding)
        state = None
        if self.lean_decoder:
            with self._torch.inference_mode():
                state = sam_decoder.image_state(self.model, feats, self._dense_pe)
        with self._lock:
            self._last = (embedding.features, feats, state)
        return feats, state

    def _check(self, embedding: Embedding) -> None:
        """Refuse embeddings of another model or with inconsistent sizes (InputError)."""
        if not isinstance(embedding, Embedding):
            raise InputError(f"expected an Embedding from set_image, got {type(embedding).__name__}")
        feats = embedding.features
        shape = (1, PROMPT_DIM, self.arch.grid, self.arch.grid)
        if embedding.model != self.name or tuple(getattr(feats, "shape", ())) != shape:
            raise InputError(
                f"embedding was computed by model {embedding.model!r} with features of shape "
                f"{tuple(getattr(feats, 'shape', ()))}; model {self.name!r} needs its own set_image ({shape})"
            )
        expect = preprocess_shape(*embedding.image_size, self.img_size)
        if tuple(embedding.input_size) != expect:
            raise InputError(f"embedding input_size {embedding.input_size} does not match image_size {embedding.image_size}")

    def _features(self, embedding: Embedding):
        """The embedding's features as a float32 tensor on the backend's device."""
        feats = embedding.features
        if isinstance(feats, self._torch.Tensor):
            return feats.to(self.device, self._torch.float32)
        return self._torch.as_tensor(_writable(np.asarray(feats, dtype=np.float32)), device=self.device)

    def _to_model_frame(self, xy: np.ndarray, embedding: Embedding) -> np.ndarray:
        """Image pixels ``(..., 2)`` -> model-frame float32 (ResizeLongestSide.apply_coords)."""
        (rows, cols), (new_rows, new_cols) = embedding.image_size, embedding.input_size
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] * (new_cols / cols)
        out[..., 1] = out[..., 1] * (new_rows / rows)
        return out.astype(np.float32)

    # -- decoding ---------------------------------------------------------------------
    def _decode(self, image, coords, labels, boxes, mask, multimask: bool):
        """Prompt encoder + mask decoder on model-frame tensors -> (low_res (B,K,256,256), iou (B,K))."""
        feats, state = image
        points = (coords, labels) if coords is not None else None
        pe = self.model.prompt_encoder
        if state is not None:
            sparse, _ = pe(points=points, boxes=boxes, masks=None)
            dense = pe._embed_masks(mask) if mask is not None else None
            return sam_decoder.decode(self.model, state, feats, sparse, dense, multimask)
        sparse, dense = pe(points=points, boxes=boxes, masks=mask)
        return self.model.mask_decoder(
            image_embeddings=feats,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def _postprocess(self, low_res, embedding: Embedding):
        """SAM's postprocess_masks: ``(N, 256, 256)`` tensor -> ``(N, H, W)`` logits on the image grid."""
        return self._upscaler.whole(low_res, embedding.image_size, embedding.input_size)

    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet:
        """Masks for one set of prompts on the image grid.

        ``prompts`` are in the image's pixel frame (``scene`` or ``tile``): points with
        labels, one box (optionally with points), several boxes, and/or a prior mask
        ``mask_logits (1, 256, 256)`` (the ``low_res_logits`` of an earlier result).
        Returns a :class:`MaskSet` with ``masks (K, H, W)`` bool, ``scores`` (predicted
        IoU), ``boxes`` xyxy and the extra column ``low_res_logits (K, 256, 256)``
        float32. ``multimask=True`` gives SAM's 3 candidates sorted by score, otherwise
        one mask. Several boxes give one mask per box (SAM's single-mask output, in box
        order), whatever ``multimask`` says.
        """
        torch = self._torch
        low = self.arch.low_res
        check_pixel_prompts(prompts, "SAM", low)
        t0 = time.perf_counter()
        image = self._image(embedding)
        with torch.inference_mode():
            coords = labels = boxes = mask = None
            if len(prompts.points):
                coords = torch.as_tensor(self._to_model_frame(prompts.points, embedding)[None], device=self.device)
                labels = torch.as_tensor(prompts.labels[None].astype(np.int32), device=self.device)
            if len(prompts.boxes):
                boxes = torch.as_tensor(
                    self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), embedding).reshape(-1, 4), device=self.device
                )
            if prompts.mask_logits is not None:
                mask = torch.as_tensor(_writable(prompts.mask_logits[None]), dtype=torch.float32, device=self.device)
            several = len(prompts.boxes) > 1
            low_res, iou = self._decode(image, coords, labels, boxes, mask, multimask and not several)
            low_res, iou = low_res.reshape(-1, low, low), iou.reshape(-1)
            if multimask and not several:
                order = torch.argsort(-iou, stable=True)
                low_res, iou = low_res[order], iou[order]
            # one candidate at a time: peak memory is one float image, not K of them
            rows, cols = embedding.image_size
            masks = np.empty((low_res.shape[0], rows, cols), dtype=bool)
            for k in range(low_res.shape[0]):
                logits = self._postprocess(low_res[k : k + 1], embedding)[0]
                masks[k] = (logits > self.mask_threshold).cpu().numpy()
            scores = iou.float().cpu().numpy()
            low_np = low_res.float().cpu().numpy()
        log.debug("SAM %s decoded %d mask(s) in %.3fs", self.name, len(scores), time.perf_counter() - t0)
        return MaskSet(
            masks,
            scores,
            extras={"low_res_logits": low_np},
            transform=embedding.extras.get("transform"),
            crs=embedding.extras.get("crs"),
        )

    def decode_points(self, embedding: Embedding, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched multimask decode for automatic mask generation.

        ``coords (B, P, 2)`` float image pixels, ``labels (B, P)`` int (1 object,
        0 background, -1 padding). Returns ``low_res_logits (B, 3, 256, 256)`` float32
        and ``iou_predictions (B, 3)`` float32, in SAM's output order (not sorted), equal
        to the official ``SamPredictor.predict_torch(..., multimask_output=True)``.
        """
        torch = self._torch
        coords = np.asarray(coords, dtype=np.float64)
        labels = np.asarray(labels)
        if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
            raise InputError(f"decode_points needs coords (B, P, 2) and labels (B, P), got {coords.shape} and {labels.shape}")
        low = self.arch.low_res
        if coords.shape[0] == 0:
            return np.zeros((0, 3, low, low), np.float32), np.zeros((0, 3), np.float32)
        image = self._image(embedding)
        low_out = np.empty((coords.shape[0], 3, low, low), np.float32)
        iou_out = np.empty((coords.shape[0], 3), np.float32)
        model_coords = self._to_model_frame(coords, embedding)
        step = max(1, int(self.decode_chunk))
        with torch.inference_mode():
            for start in range(0, coords.shape[0], step):
                c = torch.as_tensor(model_coords[start : start + step], device=self.device)
                lab = torch.as_tensor(labels[start : start + step].astype(np.int32), device=self.device)
                low_res, iou = self._decode(image, c, lab, None, None, True)
                low_out[start : start + step] = low_res.float().cpu().numpy()
                iou_out[start : start + step] = iou.float().cpu().numpy()
        return low_out, iou_out

    def decode_selected(
        self, embedding: Embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Two-stage single-point decoding for automatic generation (the
        :class:`~terramask.models.base.SelectivePointDecoder` capability): see
        :meth:`terramask.models.sam.point_batches.SamPointScorer.decode`."""
        from terramask.models.sam.point_batches import SamPointScorer

        return SamPointScorer(self, chunk=self.decode_chunk).decode(embedding, coords, select)

    def feature_map(self, embedding: Embedding) -> FeatureGrid:
        """The image embedding's cells over the image (:class:`~terramask.models.base.FeatureMap`):
        ``(256, h, w)`` float32 and the image pixels per cell."""
        self._check(embedding)
        return grid_feature_map(embedding.features, embedding.image_size, embedding.input_size, self.img_size,
                                self.arch.low_res)

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """Low-res logits ``(N, 256, 256)`` -> logits ``(N, H, W)`` float32 on the image grid.

        Reproduces SAM's ``postprocess_masks`` (bilinear to 1024, crop to ``input_size``,
        bilinear to the image size). With ``window = (x0, y0, x1, y1)`` (end exclusive)
        only that region is computed, ``(N, y1 - y0, x1 - x0)``, equal within float
        rounding to cropping the full result (:class:`terramask.models.upscale.Upscaler`).
        Threshold at ``mask_threshold`` for masks.
        """
        arr, win = upscale_arguments(low_res, self.arch.low_res, embedding.image_size, window)
        return self._upscaler(arr, embedding.image_size, embedding.input_size, win)
