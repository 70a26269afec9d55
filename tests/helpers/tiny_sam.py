"""Random-weight SAM checkpoints in the official ``segment_anything`` architecture.

No real weights exist on test machines. These helpers build the official SAM
architecture (``segment_anything.modeling``) with random weights and save it as a plain
state dict, so terramask loads it through the same code path as a real checkpoint, and
parity tests run the official :class:`segment_anything.SamPredictor` on the same file.

Architectures (``ARCHS``):
- ``tiny``: image 1024, patch 16, embed 32, depth 2, 2 heads, window 14, block 1 global.
  The prompt encoder and mask decoder are the official ones (same size as every SAM),
  only the image encoder is small, so it runs well under a second on CPU.
- ``vit_b``, ``vit_l``, ``vit_h``: the official configurations (slow; vit_b only in slow tests).

``scale_decoder=True`` multiplies the output layers of the hypernetwork MLPs and of the
IoU head so random-weight logits sit far from zero (DESIGN.md "Random weights give mask
logits close to zero"): thresholded masks then do not flip on float noise and scores
are well separated, so mask-level parity and score ordering can be tested exactly.
"""

from __future__ import annotations

from pathlib import Path

ARCHS: dict[str, dict] = {
    "tiny": dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1]),
    "vit_b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11]),
    "vit_l": dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]),
    "vit_h": dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]),
}

# Factors applied to the last linear layer of each hypernetwork MLP and of the IoU head.
HYPER_SCALE = 400.0
IOU_SCALE = 8.0


def _build(arch: str):
    from segment_anything.build_sam import _build_sam

    if arch not in ARCHS:
        raise KeyError(f"unknown test SAM arch {arch!r}; use one of {', '.join(ARCHS)}")
    return _build_sam(**ARCHS[arch], checkpoint=None)


def make_sam_state_dict(arch: str = "tiny", seed: int = 0, scale_decoder: bool = True) -> dict:
    """State dict of an official SAM with random weights (deterministic for ``seed``).

    Parameters that the official code initialises to constants (absolute and relative
    positional embeddings, layer-norm scales and offsets) get small random values too, so
    an adapter that mishandles them fails the parity tests.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _build(arch)
        with torch.no_grad():
            enc = sam.image_encoder
            if enc.pos_embed is not None:
                enc.pos_embed.normal_(0.0, 0.02)
            for blk in enc.blocks:
                if getattr(blk.attn, "use_rel_pos", False):
                    blk.attn.rel_pos_h.normal_(0.0, 0.02)
                    blk.attn.rel_pos_w.normal_(0.0, 0.02)
            for module in sam.modules():
                # LayerNorm / LayerNorm2d start at weight 1, bias 0: perturb them so an
                # adapter that skipped an affine norm parameter would be caught
                if type(module).__name__ in ("LayerNorm", "LayerNorm2d"):
                    module.weight.add_(torch.randn_like(module.weight) * 0.1)
                    module.bias.add_(torch.randn_like(module.bias) * 0.1)
            if scale_decoder:
                dec = sam.mask_decoder
                for mlp in dec.output_hypernetworks_mlps:
                    mlp.layers[-1].weight.mul_(HYPER_SCALE)
                    mlp.layers[-1].bias.mul_(HYPER_SCALE)
                dec.iou_prediction_head.layers[-1].weight.mul_(IOU_SCALE)
                dec.iou_prediction_head.layers[-1].bias.mul_(IOU_SCALE)
    return {k: v.detach().clone().contiguous() for k, v in sam.state_dict().items()}


def write_sam_checkpoint(path, arch: str = "tiny", seed: int = 0, scale_decoder: bool = True) -> Path:
    """Save a random-weight SAM of ``arch`` as a plain state dict at ``path``; return the path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_sam_state_dict(arch, seed=seed, scale_decoder=scale_decoder), path)
    return path


def arch_of_state_dict(state_dict: dict) -> str:
    """Which of ``ARCHS`` a state dict was built with (by encoder width and depth)."""
    embed = int(state_dict["image_encoder.patch_embed.proj.weight"].shape[0])
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    for name, cfg in ARCHS.items():
        if cfg["encoder_embed_dim"] == embed and cfg["encoder_depth"] == depth:
            return name
    raise KeyError(f"state dict with embed {embed} and depth {depth} matches none of {', '.join(ARCHS)}")


def build_official_sam(path, arch: str | None = None):
    """The official ``segment_anything`` model loaded from ``path`` (eval mode, CPU).

    ``arch`` defaults to the one the file was built with (looked up in ``ARCHS``); the
    official ``sam_model_registry`` only knows vit_b/l/h, so the tiny config is built here
    with the same ``_build_sam`` the registry uses.
    """
    import torch

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    sam = _build(arch or arch_of_state_dict(state))
    sam.load_state_dict(state)
    return sam.eval()


def official_predictor(path):
    """An official :class:`segment_anything.SamPredictor` over the checkpoint at ``path``."""
    from segment_anything import SamPredictor

    return SamPredictor(build_official_sam(path))
