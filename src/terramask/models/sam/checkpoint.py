"""SAM checkpoints: the image-encoder architecture read from a state dict's tensors, and
the official ``segment_anything`` ``Sam`` built for it with the checkpoint's tensors.

ViT-B/L/H checkpoints and small test configurations load through the same code; a file
that is not a SAM checkpoint, or that does not fit the architecture asked for, raises
:class:`CheckpointMismatchError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from terramask.core.errors import CheckpointMismatchError, InputError
from terramask.core.lazy import require
from terramask.models.torch_utils import load_weights, torch_module

#: Official image encoder configurations: (embed_dim, depth, num_heads, global_attn_indexes).
OFFICIAL_ARCHS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}

_ARCH_ALIASES = {"vit-b": "vit_b", "vit-l": "vit_l", "vit-h": "vit_h", "sam-vit-b": "vit_b", "sam-vit-l": "vit_l", "sam-vit-h": "vit_h", "default": "vit_h"}

# Fixed parts of every SAM (segment_anything/build_sam.py)
PROMPT_DIM = 256
_DECODER_HEADS = 8
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)

_ENC = "image_encoder."


class EncoderArch(Protocol):
    """What :class:`~terramask.models.sam.backend.SamBackend` needs to know about an
    encoder: :class:`SamArch` (ViT) or ``MobileSamArch`` (TinyViT)."""

    @property
    def name(self) -> str: ...

    @property
    def img_size(self) -> int: ...

    @property
    def grid(self) -> int: ...

    @property
    def low_res(self) -> int: ...

    def describe(self) -> str: ...


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
    found = [state.get(f"{_ENC}blocks.{i}.attn.rel_pos_h") for i in blocks]
    rel = [r for r in found if r is not None and r.ndim == 2]
    if len(rel) != len(blocks):
        raise CheckpointMismatchError(f"{source} is not a SAM checkpoint: encoder blocks lack relative position tables")
    head_dim = int(rel[0].shape[1])
    if head_dim <= 0 or embed % head_dim:
        raise CheckpointMismatchError(f"{source}: embed dim {embed} is not a multiple of head dim {head_dim}")
    glob = tuple(i for i, r in zip(blocks, rel, strict=True) if int(r.shape[0]) == 2 * grid - 1)
    windows = {(int(r.shape[0]) + 1) // 2 for i, r in zip(blocks, rel, strict=True) if i not in glob}
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
                out_chans=PROMPT_DIM,
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=PROMPT_DIM,
                image_embedding_size=(arch.grid, arch.grid),
                input_image_size=(arch.img_size, arch.img_size),
                mask_in_chans=arch.mask_in_chans,
            ),
            mask_decoder=modeling.MaskDecoder(
                num_multimask_outputs=3,
                transformer=modeling.TwoWayTransformer(
                    depth=arch.decoder_depth, embedding_dim=PROMPT_DIM, mlp_dim=arch.decoder_mlp_dim, num_heads=_DECODER_HEADS
                ),
                transformer_dim=PROMPT_DIM,
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
    load_weights(sam, state, source, f"the SAM {arch.describe()} architecture", assign=True)
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
