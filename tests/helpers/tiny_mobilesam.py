"""Random-weight MobileSAM (``vit_t``) checkpoints built with the reference code.

The reference is the ``mobile_sam`` package installed by ``mobilesam-mirror`` (a
packaging of the upstream ``ChaoningZhang/MobileSAM`` code). Its ``build_sam_vit_t``
builds the official architecture; the state dict saved here has exactly the key set of
the official ``mobile_sam.pt``, so loading it proves the official file loads.

Zero-initialised or constant parameters (attention biases, BatchNorm statistics and
affine terms, the last MBConv BN weights that upstream zero-initialises) get random
values so a parity test exercises them; the decoder output layers are scaled as in
``helpers.tiny_sam`` so thresholded masks are stable.
"""

from __future__ import annotations

from pathlib import Path

HYPER_SCALE = 400.0
IOU_SCALE = 8.0


def build_reference(seed: int = 0, scale_decoder: bool = True):
    """The reference MobileSAM ``Sam`` with random weights (eval mode, CPU)."""
    import torch
    from mobile_sam import sam_model_registry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = sam_model_registry["vit_t"]()
        with torch.no_grad():
            for mod in sam.image_encoder.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0.0, 0.1)
                    mod.running_mean.normal_(0.0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
            for name, p in sam.image_encoder.named_parameters():
                if name.endswith("attention_biases"):
                    p.normal_(0.0, 0.5)
            if scale_decoder:
                dec = sam.mask_decoder
                for mlp in dec.output_hypernetworks_mlps:
                    mlp.layers[-1].weight.mul_(HYPER_SCALE)
                    mlp.layers[-1].bias.mul_(HYPER_SCALE)
                dec.iou_prediction_head.layers[-1].weight.mul_(IOU_SCALE)
                dec.iou_prediction_head.layers[-1].bias.mul_(IOU_SCALE)
    sam.eval()  # the reference caches attention biases when switched to eval
    return sam


def write_mobilesam_checkpoint(path, seed: int = 0, scale_decoder: bool = True) -> Path:
    """Save a random-weight reference MobileSAM as a plain state dict (like ``mobile_sam.pt``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sam = build_reference(seed, scale_decoder)
    state = {k: v.detach().clone().contiguous() for k, v in sam.state_dict().items() if k != "image_encoder.ab" and not k.endswith(".ab")}
    torch.save(state, path)
    return path


def reference_from_checkpoint(path):
    """The reference MobileSAM loaded from ``path`` with the reference loader."""
    import torch
    from mobile_sam import sam_model_registry

    sam = sam_model_registry["vit_t"]()
    sam.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))
    sam.eval()
    return sam


def reference_predictor(path):
    """The reference ``mobile_sam.SamPredictor`` over the checkpoint at ``path``."""
    from mobile_sam import SamPredictor

    return SamPredictor(reference_from_checkpoint(path))
