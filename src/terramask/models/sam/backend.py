"""SAM backend: the official ``segment_anything`` model behind terramask's Backend protocol.

Frames: every coordinate crossing this module's public API is a pixel ``(x, y)`` of the
image given to :meth:`SamBackend.set_image` (the ``scene``/``tile`` frame). Internally
SAM works in the ``model`` frame: the image resized so its longest side is
``img_size`` (1024) by ``ResizeLongestSide`` and padded at the bottom/right to a square.

The module builds the official ``segment_anything`` modules (``ImageEncoderViT``,
``PromptEncoder``, ``MaskDecoder``) from an architecture inferred from the checkpoint,
so ViT-B/L/H checkpoints and small test configurations load through the same code, and
results equal those of the official ``SamPredictor`` for the same weights and inputs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import CheckpointMismatchError, InputError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.sam import decoder as sam_decoder
from terramask.models.base import Embedding, as_rgb8, check_pixel_prompts, upscale_arguments
from terramask.models.torch_utils import load_state_dict, resize_chain_window, resolve_device, torch_module

log = logging.getLogger(__name__)

#: Official image encoder configurations: (embed_dim, depth, num_heads, global_attn_indexes).
OFFICIAL_ARCHS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}

_ARCH_ALIASES = {"vit-b": "vit_b", "vit-l": "vit_l", "vit-h": "vit_h", "sam-vit-b": "vit_b", "sam-vit-l": "vit_l", "sam-vit-h": "vit_h", "default": "vit_h"}

# Fixed parts of every SAM (segment_anything/build_sam.py)
_PROMPT_DIM = 256
_DECODER_HEADS = 8
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)

_ENC = "image_encoder."


@dataclass(frozen=True)
class SamArch:
    """The image-encoder configuration of a SAM checkpoint (the rest of SAM is fixed)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    use_abs_pos: bool = True
    qkv_bias: bool = True
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048

    @property
    def name(self) -> str:
        """``vit_b``/``vit_l``/``vit_h`` for the official configurations, else ``vit_e{embed}_d{depth}_h{heads}``."""
        for key, (embed, depth, heads, glob) in OFFICIAL_ARCHS.items():
            if (self.embed_dim, self.depth, self.num_heads, self.global_attn_indexes) == (embed, depth, heads, glob) and (
                self.img_size,
                self.patch_size,
                self.window_size,
            ) == (1024, 16, 14):
                return key
        return f"vit_e{self.embed_dim}_d{self.depth}_h{self.num_heads}"

    def describe(self) -> str:
        """One line naming every inferred encoder setting (for logs and error messages)."""
        return (
            f"{self.name} (embed {self.embed_dim}, depth {self.depth}, heads {self.num_heads}, "
            f"global blocks {list(self.global_attn_indexes)}, window {self.window_size}, "
            f"patch {self.patch_size}, image {self.img_size})"
        )

    @property
    def grid(self) -> int:
        """Side of the image embedding grid (64 for SAM)."""
        return self.img_size // self.patch_size

    @property
    def low_res(self) -> int:
        """Side of the low-resolution mask logits (256 for SAM)."""
        return 4 * self.grid


def normalize_arch_name(arch: str) -> str:
    """``"vit_b"``, ``"vit-b"``, ``"sam-vit-b"`` … -> ``"vit_b"``; unknown names raise InputError."""
    key = str(arch).strip().lower()
    key = _ARCH_ALIASES.get(key, key)
    if key not in OFFICIAL_ARCHS:
        raise InputError(f"unknown SAM architecture {arch!r}; use one of {', '.join(OFFICIAL_ARCHS)}")
    return key


def infer_arch(state: dict, source: str = "checkpoint") -> SamArch:
    """Read the :class:`SamArch` from a state dict's tensor shapes.

    embed dim from ``patch_embed`` weights, depth from the block count, head dim from the
    relative-position tables (heads = embed / head dim), global-attention blocks from
    their table length (``2 * grid - 1``) and the window size from the others.
    Raises :class:`CheckpointMismatchError` naming ``source`` when it is not a SAM ViT.
    """
    def need(key: str):
        if key not in state:
            raise CheckpointMismatchError(f"{source} is not a SAM checkpoint: missing tensor {key!r}")
        return state[key]

    pw = need(_ENC + "patch_embed.proj.weight")
    if pw.ndim != 4 or pw.shape[1] != 3 or pw.shape[2] != pw.shape[3]:
        raise CheckpointMismatchError(f"{source} is not a SAM ViT checkpoint: patch embedding has shape {tuple(pw.shape)}")
    embed, patch = int(pw.shape[0]), int(pw.shape[2])
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith(_ENC + "blocks.") and k.split(".")[2].isdigit()})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointMismatchError(f"{source} is not a SAM ViT checkpoint: image encoder blocks are missing or not numbered 0..N-1")
    depth = len(blocks)
    pos = state.get(_ENC + "pos_embed")
    grid = int(pos.shape[1]) if pos is not None and pos.ndim == 4 else 1024 // patch
    rel = [state.get(f"{_ENC}blocks.{i}.attn.rel_pos_h") for i in blocks]
    if any(r is None or r.ndim != 2 for r in rel):
        raise CheckpointMismatchError(f"{source} is not a SAM checkpoint: encoder blocks lack relative position tables")
    head_dim = int(rel[0].shape[1])
    if head_dim <= 0 or embed % head_dim:
        raise CheckpointMismatchError(f"{source}: embed dim {embed} is not a multiple of head dim {head_dim}")
    glob = tuple(i for i, r in zip(blocks, rel) if int(r.shape[0]) == 2 * grid - 1)
    windows = {(int(r.shape[0]) + 1) // 2 for i, r in zip(blocks, rel) if i not in glob}
    if len(windows) > 1:
        raise CheckpointMismatchError(f"{source}: encoder blocks use different window sizes {sorted(windows)}")
    lin1 = need(f"{_ENC}blocks.0.mlp.lin1.weight")
    mask_conv = state.get("prompt_encoder.mask_downscaling.3.weight")
    dec_layers = {k.split(".")[3] for k in state if k.startswith("mask_decoder.transformer.layers.")}
    dec_mlp = state.get("mask_decoder.transformer.layers.0.mlp.lin1.weight")
    return SamArch(
        embed_dim=embed,
        depth=depth,
        num_heads=embed // head_dim,
        global_attn_indexes=glob,
        img_size=grid * patch,
        patch_size=patch,
        window_size=windows.pop() if windows else 0,
        mlp_ratio=float(lin1.shape[0]) / embed,
        use_abs_pos=pos is not None,
        qkv_bias=f"{_ENC}blocks.0.attn.qkv.bias" in state,
        mask_in_chans=int(mask_conv.shape[0]) if mask_conv is not None else 16,
        decoder_depth=len(dec_layers) or 2,
        decoder_mlp_dim=int(dec_mlp.shape[0]) if dec_mlp is not None else 2048,
    )


def build_sam_model(arch: SamArch, state: dict | None = None, source: str = "checkpoint"):
    """The official ``segment_anything`` ``Sam`` for ``arch``, with ``state`` loaded.

    With a state dict, modules are created on the meta device and the checkpoint tensors
    are assigned directly (no random initialisation, no copy); a missing, unexpected or
    wrongly shaped tensor raises :class:`CheckpointMismatchError` naming ``source``.
    """
    torch = torch_module()
    modeling = require("segment_anything.modeling", "sam", "segment-anything")
    from functools import partial

    def make():
        return modeling.Sam(
            image_encoder=modeling.ImageEncoderViT(
                depth=arch.depth,
                embed_dim=arch.embed_dim,
                img_size=arch.img_size,
                mlp_ratio=arch.mlp_ratio,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=arch.num_heads,
                patch_size=arch.patch_size,
                qkv_bias=arch.qkv_bias,
                use_abs_pos=arch.use_abs_pos,
                use_rel_pos=True,
                global_attn_indexes=arch.global_attn_indexes,
                window_size=arch.window_size,
                out_chans=_PROMPT_DIM,
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=_PROMPT_DIM,
                image_embedding_size=(arch.grid, arch.grid),
                input_image_size=(arch.img_size, arch.img_size),
                mask_in_chans=arch.mask_in_chans,
            ),
            mask_decoder=modeling.MaskDecoder(
                num_multimask_outputs=3,
                transformer=modeling.TwoWayTransformer(
                    depth=arch.decoder_depth, embedding_dim=_PROMPT_DIM, mlp_dim=arch.decoder_mlp_dim, num_heads=_DECODER_HEADS
                ),
                transformer_dim=_PROMPT_DIM,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=list(_PIXEL_MEAN),
            pixel_std=list(_PIXEL_STD),
        )

    if state is None:
        return make().eval()
    with torch.device("meta"):
        sam = make()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        sam.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "")
        raise CheckpointMismatchError(
            f"{source} does not fit the SAM {arch.describe()} architecture: {detail[:300]}"
        ) from None
    # buffers that are not part of a state dict are rebuilt on the CPU
    sam.pixel_mean = torch.tensor(_PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    sam.pixel_std = torch.tensor(_PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{source} leaves SAM tensors unset: {', '.join(left[:5])}")
    return sam.eval()


def preprocess_shape(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """``(rows, cols)`` after ``ResizeLongestSide(long_side)`` (SAM's rounding rule)."""
    scale = long_side * 1.0 / max(rows, cols)
    return int(rows * scale + 0.5), int(cols * scale + 0.5)


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
        arch: SamArch,
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
        state = load_state_dict(path, what="SAM checkpoint")
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
        shape = (1, _PROMPT_DIM, self.arch.grid, self.arch.grid)
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
        """SAM's postprocess_masks: (B,K,256,256) -> (B,K,H,W) logits on the image grid."""
        F = self._torch.nn.functional
        rows_in, cols_in = embedding.input_size
        b, k, h, w = low_res.shape
        # one channel per image: identical per-channel maths, and PyTorch's CPU kernel is
        # about twice as fast for (N, 1, h, w) as for (1, N, h, w)
        x = F.interpolate(low_res.reshape(b * k, 1, h, w), (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        x = x[..., :rows_in, :cols_in]
        if tuple(embedding.image_size) != (rows_in, cols_in):
            x = F.interpolate(x, tuple(embedding.image_size), mode="bilinear", align_corners=False)
        return x.reshape(b, k, x.shape[-2], x.shape[-1])

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
                logits = self._postprocess(low_res[None, k : k + 1], embedding)[0, 0]
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

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None, chunk: int = 16
    ) -> np.ndarray:
        """Low-res logits ``(N, 256, 256)`` -> logits ``(N, H, W)`` float32 on the image grid.

        Reproduces SAM's ``postprocess_masks`` (bilinear to 1024, crop to ``input_size``,
        bilinear to the image size). With ``window = (x0, y0, x1, y1)`` (end exclusive)
        only that region is computed, ``(N, y1 - y0, x1 - x0)``, equal within float
        rounding to cropping the full result. Threshold at ``mask_threshold`` for masks.
        """
        torch = self._torch
        low = self.arch.low_res
        arr, (x0, y0, x1, y1) = upscale_arguments(low_res, low, embedding.image_size, window)
        rows, cols = embedding.image_size
        rows_in, cols_in = embedding.input_size
        out = np.empty((arr.shape[0], y1 - y0, x1 - x0), dtype=np.float32)
        step = max(1, int(chunk))
        # PyTorch's whole-image kernel beats the gather-based window beyond ~1/5 of the image
        whole = window is None or (x1 - x0) * (y1 - y0) * 5 >= rows * cols
        with torch.inference_mode():
            for start in range(0, arr.shape[0], step):
                part = torch.as_tensor(arr[start : start + step], device=self.device)
                if whole:
                    res = self._postprocess(part[:, None], embedding)[:, 0, y0:y1, x0:x1]
                else:
                    res = resize_chain_window(
                        part,
                        [(self.img_size, rows_in), (rows, rows)],
                        [(self.img_size, cols_in), (cols, cols)],
                        (x0, y0, x1, y1),
                    )
                out[start : start + step] = res.cpu().numpy()
        return out
