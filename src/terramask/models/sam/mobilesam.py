"""MobileSAM (``vit_t``): a TinyViT image encoder in front of SAM's prompt encoder and
mask decoder, behind terramask's Backend protocol.

The model is ``segment_anything``'s ``Sam`` with its image encoder replaced by
:class:`terramask.models.sam.tinyvit.TinyViTEncoder`; everything after the encoder is
:class:`terramask.models.sam.backend.SamBackend` (same resize rule, prompts, decoder and
batched/windowed decoding), so MobileSAM behaves exactly like SAM apart from speed and
mask quality. The official ``mobile_sam.pt`` (a plain state dict) loads with
``strict=True`` and ``weights_only=True``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from terramask.core.errors import CheckpointMismatchError
from terramask.core.lazy import require
from terramask.models.sam.backend import SamBackend
from terramask.models.torch_utils import load_state_dict, load_weights, torch_module

log = logging.getLogger(__name__)

_PROMPT_DIM = 256
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class MobileSamArch:
    """What :class:`SamBackend` needs to know about a MobileSAM model."""

    img_size: int = 1024
    name: str = "vit_t"

    @property
    def grid(self) -> int:
        return self.img_size // 16

    @property
    def low_res(self) -> int:
        return 4 * self.grid

    def describe(self) -> str:
        return f"MobileSAM {self.name} (TinyViT-5M encoder, image {self.img_size})"


def build_mobilesam_model(state: dict | None = None, source: str = "checkpoint"):
    """``segment_anything.modeling.Sam`` with a TinyViT encoder (MobileSAM ``vit_t``),
    with ``state`` loaded strictly; a key or shape mismatch raises
    :class:`CheckpointMismatchError` naming ``source``."""
    torch_module()
    modeling = require("segment_anything.modeling", "sam", "segment-anything")
    from terramask.models.sam.tinyvit import TinyVitConfig, TinyViTEncoder

    cfg = TinyVitConfig()
    sam = modeling.Sam(
        image_encoder=TinyViTEncoder(cfg),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=_PROMPT_DIM,
            image_embedding_size=(cfg.grid, cfg.grid),
            input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=_PROMPT_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=_PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(_PIXEL_MEAN),
        pixel_std=list(_PIXEL_STD),
    )
    if state is not None:
        if not any(k.startswith("image_encoder.layers.") for k in state):
            raise CheckpointMismatchError(f"{source} is not a MobileSAM checkpoint: no TinyViT encoder tensors")
        load_weights(sam, state, source, "the MobileSAM vit_t architecture")
    return sam.eval()


class MobileSamBackend(SamBackend):
    """MobileSAM as a terramask backend (a :class:`SamBackend` with a TinyViT encoder)."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, arch: str | None = None, device: str = "cpu", name: str | None = None) -> "MobileSamBackend":
        """Load the official ``mobile_sam.pt`` (or any state dict of that architecture).

        ``arch`` may only be ``vit_t`` (or ``None``).
        """
        if arch not in (None, "vit_t", "vit-t", "mobilesam"):
            raise CheckpointMismatchError(f"MobileSAM has only the vit_t architecture, not {arch!r}")
        t0 = time.perf_counter()
        path = Path(path)
        state = load_state_dict(path, what="MobileSAM checkpoint", family="mobilesam")
        model = build_mobilesam_model(state, source=f"MobileSAM checkpoint {path}")
        backend = cls(model, MobileSamArch(), name=name or "mobilesam", device=device, source=str(path))
        log.info("loaded MobileSAM from %s on %s in %.2fs", path, backend.device, time.perf_counter() - t0)
        return backend

    def __repr__(self) -> str:
        return f"MobileSamBackend(name={self.name!r}, device={str(self.device)!r})"
