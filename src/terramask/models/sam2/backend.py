"""SAM 2 / SAM 2.1 backend: the official ``sam2`` package behind terramask's Backend protocol.

Frames: every coordinate crossing the public API is a pixel ``(x, y)`` of the image
given to :meth:`Sam2Backend.set_image`. Internally SAM 2 works in its ``model`` frame:
the image is *stretched* to ``image_size`` x ``image_size`` (1024 x 1024; SAM 2 does not
keep the aspect ratio, unlike SAM), so a point maps to ``(x / W * 1024, y / H * 1024)``
and low-resolution logits ``(256, 256)`` cover the whole image; they are resized straight
to ``(H, W)`` (bilinear, ``align_corners=False``).

The model is the official ``sam2.modeling.sam2_base.SAM2Base`` built from an official
configuration YAML shipped in the ``sam2`` package, with the mask-decoder settings that
``sam2.build_sam.build_sam2`` adds by default (dynamic multimask fallback). Image
transforms are the official ``SAM2Transforms``. Results therefore equal those of the
official ``SAM2ImagePredictor`` on the same weights and inputs (tested).

Checkpoints and configurations: :mod:`terramask.models.sam2.checkpoint`; the mask
clean-up that upstream runs only with its CUDA extension, on any device:
:mod:`terramask.models.sam2.cleanup`; upsampling: :mod:`terramask.models.upscale`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import InputError
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
from terramask.models.sam2.checkpoint import (  # noqa: F401  (re-exported: the backend's public names)
    OFFICIAL_CONFIGS,
    build_sam2_model,
    config_text,
    infer_config,
    read_checkpoint,
)
from terramask.models.sam2.cleanup import connected_components, fill_holes_and_sprinkles  # noqa: F401
from terramask.models.torch_utils import resolve_device, torch_module
from terramask.models.upscale import Upscaler

log = logging.getLogger(__name__)

_LOW_RES_CLAMP = 32.0  # SAM2ImagePredictor clamps returned low-res logits to +-32


# -- the backend --------------------------------------------------------------------------


class Sam2Backend:
    """SAM 2 / SAM 2.1 (any Hiera size) as a terramask backend.

    Implements :class:`~terramask.models.base.Backend` and
    :class:`~terramask.models.base.PointBatchDecoder`. Build it with
    :meth:`from_checkpoint`. ``mask_threshold`` is 0.0. ``max_hole_area`` and
    ``max_sprinkle_area`` (pixels of the 256 x 256 low-res grid; 0 = off, as in
    ``SAM2ImagePredictor``) enable the mask clean-up, on CPU too.
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        model,
        name: str = "sam2",
        device: str = "cpu",
        source: str | None = None,
        config: str | None = None,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        self._torch = torch_module()
        transforms = require("sam2.utils.transforms", "sam2")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.source = source
        self.config = config
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.img_size = int(self.model.image_size)
        # official transforms (resize to img_size x img_size, ImageNet normalisation);
        # the clean-up is done here on the CPU, never through the CUDA extension
        with warnings.catch_warnings():  # upstream uses torch.jit.script, deprecated in recent torch
            warnings.simplefilter("ignore", FutureWarning)
            self._transforms = transforms.SAM2Transforms(resolution=self.img_size, mask_threshold=self.mask_threshold)
        stride = int(self.model.backbone_stride)
        grid = self.img_size // stride
        self._feat_sizes = [(grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)]
        self.low_res = grid * 4
        self._upscaler = Upscaler(self.low_res, None, "torch", self.device)
        with self._torch.inference_mode():
            self._dense_pe = self.model.sam_prompt_encoder.get_dense_pe()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: str | None = None,
        device: str = "cpu",
        name: str | None = None,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> "Sam2Backend":
        """Load an official SAM 2 / 2.1 checkpoint (``{"model": state_dict}``, e.g.
        ``sam2.1_hiera_tiny.pt``).

        ``config``: an official key (``sam2.1_hiera_t``, ``sam2.1_hiera_b+`` …), a config
        path inside the ``sam2`` package or a YAML file; by default the configuration
        stored in the checkpoint (terramask test files), else the official one whose trunk
        matches the tensors. Loading never unpickles objects (``weights_only=True``).
        """
        t0 = time.perf_counter()
        path = Path(path)
        state, embedded = read_checkpoint(path)
        source = f"SAM 2 checkpoint {path}"
        if config is not None:
            yaml_text, config_name = config_text(config), config
        elif embedded is not None:
            yaml_text, config_name = embedded, "embedded"
        else:
            config_name = infer_config(state, source)
            yaml_text = config_text(config_name)
        model = build_sam2_model(yaml_text, state, source=source)
        backend = cls(
            model,
            name=name or f"sam2:{path.stem}",
            device=device,
            source=str(path),
            config=config_name,
            max_hole_area=max_hole_area,
            max_sprinkle_area=max_sprinkle_area,
        )
        log.info("loaded SAM 2 (%s) from %s on %s in %.2fs", config_name, path, backend.device, time.perf_counter() - t0)
        return backend

    def __repr__(self) -> str:
        return f"Sam2Backend(name={self.name!r}, config={self.config!r}, device={str(self.device)!r})"

    # -- image -----------------------------------------------------------------------
    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Encode an image once.

        Returns an :class:`Embedding` whose ``features`` is a dict of float32 numpy
        arrays: ``image_embed (1, 256, 64, 64)`` and ``high_res_feats`` =
        ``[(1, 32, 256, 256), (1, 64, 128, 128)]`` (already projected by the decoder's
        ``conv_s0``/``conv_s1``, with ``no_mem_embed`` added as upstream);
        ``input_size`` is ``(1024, 1024)`` (SAM 2 stretches the image).
        """
        torch = self._torch
        rgb = as_rgb8(image)
        rows, cols = int(rgb.shape[0]), int(rgb.shape[1])
        if rows < 1 or cols < 1:
            raise InputError(f"cannot encode an empty image of shape {rgb.shape}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = self._transforms(rgb)[None].to(self.device)
            backbone_out = self.model.forward_image(x)
            _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
            if self.model.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
            feats = [
                f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats[::-1], self._feat_sizes[::-1], strict=True)
            ][::-1]
            # contiguous copies: the upstream views are channels-last, and the decoder's
            # float rounding depends on the layout, so a cached (contiguous) embedding
            # would otherwise decode a few ulps differently from a fresh one
            features = {
                "image_embed": feats[-1].float().contiguous().cpu().numpy(),
                "high_res_feats": [f.float().contiguous().cpu().numpy() for f in feats[:-1]],
            }
        extras: dict[str, Any] = {"config": self.config}
        if isinstance(image, GeoImage):
            extras["transform"] = image.transform
            extras["crs"] = image.crs
        log.debug("SAM 2 %s encoded %dx%d image in %.3fs", self.name, rows, cols, time.perf_counter() - t0)
        return Embedding(
            model=self.name,
            features=features,
            image_size=(rows, cols),
            input_size=(self.img_size, self.img_size),
            extras=extras,
        )

    def _features(self, embedding: Embedding):
        if not isinstance(embedding, Embedding):
            raise InputError(f"expected an Embedding from set_image, got {type(embedding).__name__}")
        feats = embedding.features
        grid = self._feat_sizes[-1][0]
        ok = (
            embedding.model == self.name
            and isinstance(feats, dict)
            and feats.get("image_embed") is not None
            and tuple(np.shape(feats["image_embed"])) == (1, 256, grid, grid)
            and len(feats.get("high_res_feats", ())) == 2
        )
        if not ok:
            raise InputError(
                f"embedding was computed by model {embedding.model!r}; model {self.name!r} needs its own set_image"
            )
        torch = self._torch
        image_embed = torch.as_tensor(np.asarray(feats["image_embed"], dtype=np.float32), device=self.device)
        high_res = [torch.as_tensor(np.asarray(f, dtype=np.float32), device=self.device) for f in feats["high_res_feats"]]
        return image_embed, high_res

    def _to_model_frame(self, xy: np.ndarray, embedding: Embedding) -> np.ndarray:
        """Image pixels ``(..., 2)`` -> model frame (``x / W * 1024``, ``y / H * 1024``), float32
        computed in float32 like ``SAM2Transforms.transform_coords``."""
        rows, cols = embedding.image_size
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] / np.float32(cols)
        out[..., 1] = out[..., 1] / np.float32(rows)
        return out * np.float32(self.img_size)

    # -- decoding --------------------------------------------------------------------
    def _decode(self, embedding: Embedding, coords, labels, mask, multimask: bool):
        """Prompt encoder + mask decoder on model-frame tensors -> (low_res (B,K,256,256), iou (B,K))."""
        image_embed, high_res = self._features(embedding)
        points = (coords, labels) if coords is not None else None
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask)
        batched = coords is not None and coords.shape[0] > 1
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=batched,
            high_res_features=high_res,
        )
        return low_res, iou

    def _clean(self, low_res: np.ndarray) -> np.ndarray:
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            return fill_holes_and_sprinkles(low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        return low_res

    def _upscale_full(self, low_res: np.ndarray, embedding: Embedding):
        """(N, 256, 256) -> (N, H, W) logits tensor (clean-up, then one bilinear resize)."""
        x = self._torch.as_tensor(self._clean(low_res), device=self.device)
        return self._upscaler.whole(x, embedding.image_size, embedding.input_size)

    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet:
        """Masks for one set of prompts on the image grid.

        Points with labels, one box (optionally with points), several boxes, and/or a prior
        mask ``mask_logits (1, 256, 256)``. Returns a :class:`MaskSet` with ``masks (K, H, W)``
        bool, ``scores`` (predicted IoU in [0, 1]), boxes, and ``low_res_logits (K, 256, 256)``
        float32 clamped to +-32 like ``SAM2ImagePredictor``. ``multimask=True`` gives 3
        candidates sorted by score; several boxes give one mask per box in box order.
        """
        torch = self._torch
        low = self.low_res
        check_pixel_prompts(prompts, "SAM 2", low)
        t0 = time.perf_counter()
        several = len(prompts.boxes) > 1
        multi = multimask and not several
        with torch.inference_mode():
            coords = labels = mask = None
            if len(prompts.boxes):
                # boxes become two points labelled 2 and 3, placed before any clicks (upstream)
                box_xy = self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), embedding)
                coords = torch.as_tensor(box_xy, device=self.device)
                labels = torch.tensor([[2, 3]], dtype=torch.int32, device=self.device).repeat(len(box_xy), 1)
            if len(prompts.points):
                pts = torch.as_tensor(self._to_model_frame(prompts.points, embedding)[None], device=self.device)
                lab = torch.as_tensor(prompts.labels[None].astype(np.int32), device=self.device)
                coords = pts if coords is None else torch.cat([coords, pts], dim=1)
                labels = lab if labels is None else torch.cat([labels, lab], dim=1)
            if prompts.mask_logits is not None:
                mask = torch.as_tensor(np.array(prompts.mask_logits[None], dtype=np.float32), device=self.device)
            low_res, iou = self._decode(embedding, coords, labels, mask, multi)
            low_res, iou = low_res.reshape(-1, low, low), iou.reshape(-1)
            if multi:
                order = torch.argsort(-iou, stable=True)
                low_res, iou = low_res[order], iou[order]
            low_np = low_res.float().cpu().numpy()
            logits = self._upscale_full(low_np, embedding)
            masks = (logits > self.mask_threshold).cpu().numpy()
            scores = iou.float().cpu().numpy()
        log.debug("SAM 2 %s decoded %d mask(s) in %.3fs", self.name, len(scores), time.perf_counter() - t0)
        return MaskSet(
            masks,
            scores,
            extras={"low_res_logits": np.clip(low_np, -_LOW_RES_CLAMP, _LOW_RES_CLAMP)},
            transform=embedding.extras.get("transform"),
            crs=embedding.extras.get("crs"),
        )

    def decode_points(self, embedding: Embedding, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched multimask decode for automatic mask generation.

        ``coords (B, P, 2)`` float image pixels, ``labels (B, P)`` int (1 object,
        0 background, -1 padding). Returns ``low_res_logits (B, 3, 256, 256)`` float32
        (not clamped) and ``iou_predictions (B, 3)`` float32 in SAM 2's output order.
        """
        torch = self._torch
        coords = np.asarray(coords, dtype=np.float64)
        labels = np.asarray(labels)
        if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
            raise InputError(f"decode_points needs coords (B, P, 2) and labels (B, P), got {coords.shape} and {labels.shape}")
        low = self.low_res
        if coords.shape[0] == 0:
            return np.zeros((0, 3, low, low), np.float32), np.zeros((0, 3), np.float32)
        with torch.inference_mode():
            c = torch.as_tensor(self._to_model_frame(coords, embedding), device=self.device)
            lab = torch.as_tensor(labels.astype(np.int32), device=self.device)
            low_res, iou = self._decode(embedding, c, lab, None, True)
            return low_res.float().cpu().numpy(), iou.float().cpu().numpy()

    def feature_map(self, embedding: Embedding) -> FeatureGrid:
        """The lowest-resolution image embedding over the image
        (:class:`~terramask.models.base.FeatureMap`): ``(256, 64, 64)`` float32 (SAM 2
        stretches the image, so cells are ``rows / 64`` by ``cols / 64`` image pixels)."""
        image_embed, _ = self._features(embedding)
        return grid_feature_map(image_embed.cpu().numpy(), embedding.image_size, embedding.input_size, self.img_size,
                                self.low_res)

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """Low-res logits ``(N, 256, 256)`` -> logits ``(N, H, W)`` float32 on the image grid
        (SAM 2's rule: optional hole/island clean-up, then one bilinear resize). With
        ``window = (x0, y0, x1, y1)`` only that region is computed
        (:class:`terramask.models.upscale.Upscaler`)."""
        arr, win = upscale_arguments(low_res, self.low_res, embedding.image_size, window)
        return self._upscaler(self._clean(arr), embedding.image_size, embedding.input_size, win)
