"""Torch helpers shared by the torch backends: device choice and safe checkpoint loading
(windowed upsampling lives in :mod:`terramask.models.upscale`).

torch is imported lazily (``terramask.core.lazy.require``), so importing this module is
cheap; every function that needs torch imports it on call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from terramask.core.errors import CheckpointMismatchError, InputError, ModelError, WeightsNotFoundError
from terramask.core.lazy import require

log = logging.getLogger(__name__)


def torch_module(extra: str = "sam"):
    """The ``torch`` module, or :class:`MissingDependencyError` naming the extra."""
    return require("torch", extra)


def resolve_device(device: str | Any = "cpu"):
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` -> ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA on a machine without it
    raises :class:`ModelError` instead of failing later inside the model.
    """
    torch = torch_module()
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device or "cpu").strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"device {device!r} requested but MPS is not available on this machine; use --device cpu")
    return dev


def refused_pickle_message(path: Path, what: str, family: str | None = None) -> str:
    """One line for a checkpoint that holds pickled Python objects: what the file is, that
    terramask will not load it, and where to get a real one (the registry's official
    download for this file name or ``family``). Never suggests loading it anyway."""
    from terramask.models.registry import list_specs, spec_for_filename

    spec = spec_for_filename(path.name)
    specs = [spec] if spec is not None else [s for s in list_specs(family) if s.url] if family else []
    if specs:
        names = ", ".join(s.name for s in specs)
        where = f"get the official file with `terramask models download {specs[0].name if len(specs) == 1 else 'NAME'}`"
        where += f" ({'NAME: ' + names + '; ' if len(specs) > 1 else ''}from {specs[0].url})"
    else:
        where = "get the official checkpoint with `terramask models download NAME` (see `terramask models list`)"
    return (
        f"{what} {path} contains pickled Python objects, not a plain state dict of tensors; "
        f"terramask will not load it (unpickling can run arbitrary code): {where}"
    )


def torch_load(path: Path, what: str = "checkpoint", family: str | None = None) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors:
    :class:`WeightsNotFoundError` for a missing file, :class:`CheckpointMismatchError`
    for pickled objects (:func:`refused_pickle_message`) or an unreadable file."""
    torch = torch_module()
    if not path.exists():
        raise WeightsNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(exc)
        # weights_only refusals always mention weights_only; only "Unsupported global"
        # means the file really holds pickled objects (garbage gives "Unsupported operand").
        if "Unsupported global" in text:
            raise CheckpointMismatchError(refused_pickle_message(path, what, family)) from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
        reasons = [ln for ln in lines if "Unsupported" in ln or "error" in ln.lower()]
        first = reasons[-1] if reasons else (lines[0] if lines else type(exc).__name__)
        raise CheckpointMismatchError(f"{what} {path} is not a readable PyTorch checkpoint ({first[:200]})") from None


def load_state_dict(path: str | Path, what: str = "checkpoint", family: str | None = None) -> dict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, never unpickling objects.

    Uses :func:`torch_load` (``weights_only=True``). Unwraps the common containers
    (``{"model": ...}``, ``{"state_dict": ...}``) and a ``module.`` prefix left by
    DataParallel. Raises :class:`WeightsNotFoundError` when the file is missing and
    :class:`CheckpointMismatchError` (one line, naming the file) when it is not a
    checkpoint, holds pickled objects, or holds no tensors. ``family`` (registry family)
    names the official downloads in the message for a refused file.
    """
    torch = torch_module()
    path = Path(path)
    obj = torch_load(path, what, family)
    state = obj
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise CheckpointMismatchError(f"{what} {path} does not hold a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError(f"{what} {path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_weights(module: Any, state: dict, source: object, fits: str, *, assign: bool = False) -> None:
    """Load ``state`` into ``module`` strictly, floating tensors as float32.

    A missing, unexpected or wrongly shaped tensor raises :class:`CheckpointMismatchError`
    "``source`` does not fit ``fits``: <first lines of torch's reason>" (``fits`` names
    the architecture, e.g. ``"the MobileSAM vit_t architecture"``). ``assign`` as
    ``Module.load_state_dict`` (needed for modules built on the meta device).
    """
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "")
        raise CheckpointMismatchError(f"{source} does not fit {fits}: {detail[:300]}") from None
