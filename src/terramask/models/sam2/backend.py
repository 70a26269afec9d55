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

The official post-processing that fills small holes and removes small islands in the
low-resolution masks (``max_hole_area`` / ``max_sprinkle_area``) calls a CUDA extension
(``sam2._C``) that CPU installs do not have; upstream then silently skips it. Here it is
done with OpenCV connected components (8-connectivity, like the CUDA kernel) on any
device: :func:`connected_components` and :func:`fill_holes_and_sprinkles`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import CheckpointMismatchError, InputError, ModelError, WeightsNotFoundError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Embedding, as_rgb8, check_pixel_prompts, upscale_arguments
from terramask.models.torch_utils import resize_chain_window, resolve_device, torch_module

log = logging.getLogger(__name__)

#: Official configurations: key -> (config path inside the sam2 package, trunk embed dim, trunk depth).
OFFICIAL_CONFIGS: dict[str, tuple[str, int, int]] = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", 96, 12),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", 96, 16),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", 112, 24),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", 144, 48),
    "sam2_hiera_t": ("configs/sam2/sam2_hiera_t.yaml", 96, 12),
    "sam2_hiera_s": ("configs/sam2/sam2_hiera_s.yaml", 96, 16),
    "sam2_hiera_b+": ("configs/sam2/sam2_hiera_b+.yaml", 112, 24),
    "sam2_hiera_l": ("configs/sam2/sam2_hiera_l.yaml", 144, 48),
}

#: Mask-decoder settings ``build_sam2(apply_postprocessing=True)`` adds (upstream default).
_POSTPROCESSING_ARGS = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
_TRUNK = "image_encoder.trunk."
_EMBED_DIM = 256
_LOW_RES_CLAMP = 32.0  # SAM2ImagePredictor clamps returned low-res logits to +-32


# -- CPU post-processing -------------------------------------------------------------


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of ``(N, H, W)`` bool masks (OpenCV).

    Returns ``labels (N, H, W) int32`` (0 on background, 1.. per component) and
    ``areas (N, H, W) int32`` (the pixel count of each pixel's component, 0 on
    background), the contract of ``sam2.utils.misc.get_connected_components``.
    """
    cv2 = require("cv2", "sam", "opencv-python-headless")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise InputError(f"connected_components needs (N, H, W) masks, got shape {mask.shape}")
    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for i, m in enumerate(mask):
        if not m.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        labels[i] = lab
        area_of = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        area_of[0] = 0
        areas[i] = area_of[lab]
    return labels, areas


def fill_holes_and_sprinkles(
    logits: np.ndarray, threshold: float = 0.0, max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0
) -> np.ndarray:
    """SAM 2's mask clean-up on ``(N, h, w)`` float logits, on the CPU.

    Background components (``logit <= threshold``) of at most ``max_hole_area`` pixels
    become ``threshold + 10``; foreground components (``> threshold``, taken from the
    input, as upstream) of at most ``max_sprinkle_area`` pixels become ``threshold - 10``.
    Equal to ``SAM2Transforms.postprocess_masks`` with the CUDA extension present.
    """
    logits = np.asarray(logits, dtype=np.float32)
    out = logits
    if max_hole_area > 0:
        labels, areas = connected_components(logits <= threshold)
        hole = (labels > 0) & (areas <= max_hole_area)
        out = np.where(hole, np.float32(threshold + 10.0), out)
    if max_sprinkle_area > 0:
        labels, areas = connected_components(logits > threshold)
        sprinkle = (labels > 0) & (areas <= max_sprinkle_area)
        out = np.where(sprinkle, np.float32(threshold - 10.0), out)
    return out.astype(np.float32, copy=False)


# -- configuration and loading -----------------------------------------------------------


def _sam2_root() -> Path:
    sam2 = require("sam2", "sam2")
    return Path(sam2.__file__).parent


def config_text(config: str) -> str:
    """YAML text of ``config``: an official key (``sam2.1_hiera_t`` …), a path inside the
    ``sam2`` package (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a YAML file."""
    if config in OFFICIAL_CONFIGS:
        config = OFFICIAL_CONFIGS[config][0]
    for candidate in (Path(config).expanduser(), _sam2_root() / config):
        if candidate.is_file():
            return candidate.read_text()
    raise InputError(
        f"unknown SAM 2 configuration {config!r}: not a file, not in the sam2 package; "
        f"official ones are {', '.join(OFFICIAL_CONFIGS)}"
    )


def infer_config(state: dict, source: str = "checkpoint") -> str:
    """The official configuration key a SAM 2 state dict belongs to.

    Hiera trunks are told apart by embed dim and block count; SAM 2.1 by tensors that
    SAM 2.0 lacks (``no_obj_embed_spatial``). Window sizes and head counts are not in
    the weights, so other trunks need an explicit configuration.
    """
    key = _TRUNK + "patch_embed.proj.weight"
    if key not in state:
        raise CheckpointMismatchError(f"{source} is not a SAM 2 checkpoint: missing tensor {key!r}")
    embed = int(state[key].shape[0])
    depth = len({k.split(".")[3] for k in state if k.startswith(_TRUNK + "blocks.")})
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    for name, (_, e, d) in OFFICIAL_CONFIGS.items():
        if name.startswith(version + "_") and (e, d) == (embed, depth):
            return name
    raise CheckpointMismatchError(
        f"{source}: a SAM 2 Hiera trunk with embed dim {embed} and {depth} blocks matches no official "
        f"configuration ({', '.join(OFFICIAL_CONFIGS)}); pass the configuration YAML explicitly"
    )


def _read_checkpoint(path: Path) -> tuple[dict, str | None]:
    """``(state_dict, embedded config YAML or None)`` of an official-format SAM 2 file,
    loaded with ``weights_only=True`` (no arbitrary unpickling)."""
    torch = torch_module()
    if not path.exists():
        raise WeightsNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError … for bad files
        text = str(exc).strip()
        if "Unsupported global" in text:  # a pickled object that is not a tensor
            raise CheckpointMismatchError(
                f"SAM 2 checkpoint {path} contains pickled Python objects besides tensors and was refused "
                "(loaded with weights_only=True for safety)"
            ) from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointMismatchError(f"SAM 2 checkpoint {path} is not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"SAM 2 checkpoint {path} does not hold a dict (found {type(obj).__name__})")
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"SAM 2 checkpoint {path}: 'model' is not a state dict")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError(f"SAM 2 checkpoint {path} holds no tensors")
    cfg = obj.get("terramask_config")
    return tensors, cfg if isinstance(cfg, str) else None


def build_sam2_model(yaml_text: str, state: dict | None = None, source: str = "checkpoint", postprocessing: bool = True):
    """The official ``SAM2Base`` for a configuration, with ``state`` loaded strictly.

    ``postprocessing`` adds the dynamic-multimask settings ``build_sam2`` adds by default.
    A missing, unexpected or wrongly shaped tensor raises :class:`CheckpointMismatchError`.
    """
    torch_module()
    require("sam2", "sam2")
    omegaconf = require("omegaconf", "sam2", "omegaconf")
    hydra_utils = require("hydra.utils", "sam2", "hydra-core")
    cfg = omegaconf.OmegaConf.create(yaml_text)
    if "model" not in cfg:
        raise InputError(f"SAM 2 configuration for {source} has no 'model' section")
    if postprocessing:
        omegaconf.OmegaConf.update(cfg, "model.sam_mask_decoder_extra_args", dict(_POSTPROCESSING_ARGS), force_add=True)
    omegaconf.OmegaConf.resolve(cfg)
    try:
        model = hydra_utils.instantiate(cfg.model, _recursive_=True)
    except Exception as exc:
        raise ModelError(f"cannot build the SAM 2 model for {source}: {str(exc).splitlines()[0][:300]}") from None
    if state is not None:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "")
            raise CheckpointMismatchError(f"{source} does not fit its SAM 2 configuration: {detail[:300]}") from None
    return model.eval()


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
        state, embedded = _read_checkpoint(path)
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
                f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats[::-1], self._feat_sizes[::-1])
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
            and tuple(np.shape(feats.get("image_embed"))) == (1, _EMBED_DIM, grid, grid)
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
        torch = self._torch
        F = torch.nn.functional
        x = torch.as_tensor(self._clean(low_res), device=self.device)[:, None]
        return F.interpolate(x, tuple(embedding.image_size), mode="bilinear", align_corners=False)[:, 0]

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
                mask = torch.as_tensor(prompts.mask_logits[None], dtype=torch.float32, device=self.device)
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

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None, chunk: int = 16
    ) -> np.ndarray:
        """Low-res logits ``(N, 256, 256)`` -> logits ``(N, H, W)`` float32 on the image grid
        (SAM 2's rule: optional hole/island clean-up, then one bilinear resize). With
        ``window = (x0, y0, x1, y1)`` only that region is computed."""
        torch = self._torch
        low = self.low_res
        arr, (x0, y0, x1, y1) = upscale_arguments(low_res, low, embedding.image_size, window)
        rows, cols = embedding.image_size
        out = np.empty((arr.shape[0], y1 - y0, x1 - x0), dtype=np.float32)
        step = max(1, int(chunk))
        with torch.inference_mode():
            for start in range(0, arr.shape[0], step):
                part = arr[start : start + step]
                if window is None:
                    res = self._upscale_full(part, embedding)
                else:
                    res = resize_chain_window(
                        torch.as_tensor(self._clean(part), device=self.device), [(rows, rows)], [(cols, cols)], (x0, y0, x1, y1)
                    )
                out[start : start + step] = res.cpu().numpy()
        return out
