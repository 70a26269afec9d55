"""Random-weight SAM 2.1 checkpoints in the official ``sam2`` architecture.

The official SAM 2.1 configurations (``sam2/configs/sam2.1/*.yaml`` inside the ``sam2``
package) are loaded with OmegaConf; ``tiny`` shrinks the Hiera trunk (embed 16, blocks
1/1/2/1, a global block inside stage 3 as upstream) and the video-memory modules that
image prediction never runs, so a model builds and encodes a 1024 x 1024 image in about
a second on CPU. The prompt encoder and mask decoder keep their official size. ``hiera_t`` is the official SAM 2.1 Hiera-T.

Checkpoints are written like the official ones (``{"model": state_dict}``) plus the
YAML of the configuration under ``"terramask_config"`` (a string, so loading stays
``weights_only=True``); terramask reads it, the official loader ignores it.

``scale_decoder=True`` multiplies the last layers of the hypernetwork MLPs and of the
IoU head so random-weight logits sit far from zero (see DESIGN.md) and thresholded
masks do not flip on float noise in parity tests.
"""

from __future__ import annotations

from pathlib import Path

HYPER_SCALE = 400.0
IOU_SCALE = 8.0

TINY_OVERRIDES = {
    "model.image_encoder.trunk.embed_dim": 16,
    "model.image_encoder.trunk.num_heads": 1,
    "model.image_encoder.trunk.stages": [1, 1, 2, 1],
    "model.image_encoder.trunk.global_att_blocks": [3],  # not a pooling block (as upstream)
    "model.image_encoder.neck.backbone_channel_list": [128, 64, 32, 16],
    "model.memory_attention.num_layers": 1,
    "model.memory_attention.layer.dim_feedforward": 64,
    "model.memory_encoder.fuser.num_layers": 1,
}


def official_config_path(name: str = "configs/sam2.1/sam2.1_hiera_t.yaml") -> Path:
    import sam2

    return Path(sam2.__file__).parent / name


def tiny_config_yaml(arch: str = "tiny") -> str:
    """YAML text of the test configuration ``arch`` (``tiny`` or ``hiera_t``)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(official_config_path())
    if arch == "tiny":
        for key, value in TINY_OVERRIDES.items():
            OmegaConf.update(cfg, key, value, merge=False)
    elif arch != "hiera_t":
        raise KeyError(f"unknown test SAM 2 arch {arch!r}; use tiny or hiera_t")
    return OmegaConf.to_yaml(cfg)


def _instantiate(yaml_text: str, postprocessing: bool = True):
    """The official SAM2Base for a config, exactly as ``sam2.build_sam.build_sam2`` builds it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(yaml_text)
    if postprocessing:  # the overrides build_sam2(apply_postprocessing=True) adds
        OmegaConf.update(
            cfg,
            "model.sam_mask_decoder_extra_args",
            {
                "dynamic_multimask_via_stability": True,
                "dynamic_multimask_stability_delta": 0.05,
                "dynamic_multimask_stability_thresh": 0.98,
            },
            force_add=True,
        )
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def make_sam2_state_dict(arch: str = "tiny", seed: int = 0, scale_decoder: bool = True) -> tuple[dict, str]:
    """``(state_dict, config_yaml)`` of an official SAM 2.1 with random weights."""
    import torch

    yaml_text = tiny_config_yaml(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _instantiate(yaml_text)
        with torch.no_grad():
            trunk = model.image_encoder.trunk
            trunk.pos_embed.normal_(0.0, 0.02)  # zero-initialised upstream
            trunk.pos_embed_window.normal_(0.0, 0.02)
            model.no_mem_embed.normal_(0.0, 0.02)
            if scale_decoder:
                dec = model.sam_mask_decoder
                for mlp in dec.output_hypernetworks_mlps:
                    mlp.layers[-1].weight.mul_(HYPER_SCALE)
                    mlp.layers[-1].bias.mul_(HYPER_SCALE)
                dec.iou_prediction_head.layers[-1].weight.mul_(IOU_SCALE)
                dec.iou_prediction_head.layers[-1].bias.mul_(IOU_SCALE)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return state, yaml_text


def write_sam2_checkpoint(path, arch: str = "tiny", seed: int = 0, scale_decoder: bool = True, embed_config: bool = True) -> Path:
    """Save a random-weight SAM 2.1 like the official files (``{"model": ...}``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state, yaml_text = make_sam2_state_dict(arch, seed=seed, scale_decoder=scale_decoder)
    obj = {"model": state}
    if embed_config:
        obj["terramask_config"] = yaml_text
    torch.save(obj, path)
    return path


def build_official_sam2(path):
    """The official SAM2Base from a checkpoint written by :func:`write_sam2_checkpoint`,
    loaded with the official ``sam2.build_sam._load_checkpoint`` (eval mode, CPU)."""
    import torch
    from sam2.build_sam import _load_checkpoint

    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = _instantiate(obj["terramask_config"])
    _load_checkpoint(model, str(path))
    return model.eval()


def official_predictor(path, **kwargs):
    """An official :class:`sam2.sam2_image_predictor.SAM2ImagePredictor` over ``path``."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(build_official_sam2(path), **kwargs)
