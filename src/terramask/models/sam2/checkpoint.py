"""SAM 2 / 2.1 checkpoints: official configurations, reading a checkpoint file without
unpickling objects, and building the official ``SAM2Base`` with its tensors."""

from __future__ import annotations

from pathlib import Path

from terramask.core.errors import CheckpointMismatchError, InputError, ModelError
from terramask.core.lazy import require
from terramask.models.torch_utils import load_weights, torch_load, torch_module

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


def _sam2_root() -> Path:
    sam2 = require("sam2", "sam2")
    return Path(str(sam2.__file__)).parent


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


def read_checkpoint(path: Path) -> tuple[dict, str | None]:
    """``(state_dict, embedded config YAML or None)`` of an official-format SAM 2 file,
    loaded with ``weights_only=True`` (no arbitrary unpickling; a file holding pickled
    objects is refused with :func:`~terramask.models.torch_utils.refused_pickle_message`)."""
    torch = torch_module()
    obj = torch_load(path, "SAM 2 checkpoint", "sam2")
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
        load_weights(model, state, source, "its SAM 2 configuration")
    return model.eval()
