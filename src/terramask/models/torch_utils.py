"""Torch helpers shared by the torch backends: device choice, safe checkpoint loading and
windowed bilinear upsampling.

torch is imported lazily (``terramask.core.lazy.require``), so importing this module is
cheap; every function that needs torch imports it on call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, never unpickling objects.

    Uses ``torch.load(..., map_location="cpu", weights_only=True)``. Unwraps the common
    containers (``{"model": ...}``, ``{"state_dict": ...}``) and a ``module.`` prefix left
    by DataParallel. Raises :class:`WeightsNotFoundError` when the file is missing and
    :class:`CheckpointMismatchError` (one line, naming the file) when it is not a
    checkpoint, holds pickled objects, or holds no tensors.
    """
    torch = torch_module()
    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(exc)
        # weights_only refusals always mention weights_only; only "Unsupported global"
        # means the file really holds pickled objects (garbage gives "Unsupported operand").
        if "Unsupported global" in text:
            raise CheckpointMismatchError(
                f"{what} {path} contains pickled Python objects besides tensors and was refused "
                f"(loaded with weights_only=True for safety); give a plain state-dict checkpoint"
            ) from None
        reasons = [line.strip() for line in text.splitlines() if "Unsupported" in line or "error" in line.lower()]
        first = reasons[-1] if reasons else (text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise CheckpointMismatchError(f"{what} {path} is not a readable PyTorch checkpoint ({first})") from None
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


# -- windowed bilinear upsampling ------------------------------------------------------


def bilinear_taps(in_size: int, out_size: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of PyTorch's bilinear resize (``align_corners=False``).

    For outputs ``start .. stop-1`` of a resize from ``in_size`` to ``out_size`` along one
    axis, returns ``idx (n, 2) int64`` and ``w (n, 2) float32`` with
    ``out[o] = w[o, 0] * in[idx[o, 0]] + w[o, 1] * in[idx[o, 1]]``. The arithmetic follows
    ``aten/src/ATen/native/UpSample.h``: float32 ``scale = in / out``, source index
    ``scale * (o + 0.5) - 0.5`` rounded once to float32 (the kernel's fused multiply-add;
    this reproduces its weights bit for bit), clamped at 0, upper neighbour clamped to the
    last input.
    """
    stop = out_size if stop is None else stop
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    dst = np.arange(start, stop, dtype=np.float64)
    src = np.maximum((scale * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    l0 = (np.float32(1.0) - l1).astype(np.float32)
    return np.stack([i0, i1], axis=1), np.stack([l0, l1], axis=1)


def _chain_taps(in_size: int, stages: Sequence[tuple[int, int]], start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per-stage taps along one axis for outputs ``start..stop-1`` of the last stage.

    ``stages`` is a list of ``(resize_to, keep)``: resize the axis to ``resize_to`` then
    keep its first ``keep`` entries. Returns, from the first stage to the last, tuples
    ``(idx relative to the needed input range, weights, input range start)``.
    """
    sizes = [in_size] + [keep for _, keep in stages[:-1]]
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    lo, hi = start, stop
    for (resize_to, _keep), src_size in zip(reversed(stages), reversed(sizes)):
        idx, w = bilinear_taps(src_size, resize_to, lo, hi)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        out.append((idx - lo, w, lo))
    return out[::-1]


def resize_chain_window(
    x, stages_h: Sequence[tuple[int, int]], stages_w: Sequence[tuple[int, int]], window: tuple[int, int, int, int]
):
    """Only the ``window`` region of a chain of bilinear resizes and crops.

    ``x`` is a ``(N, h, w)`` float tensor. ``stages_h``/``stages_w`` list per axis
    ``(resize_to, keep)`` steps (``F.interpolate(..., mode="bilinear",
    align_corners=False)`` to ``resize_to`` then ``[:keep]``); ``window`` is
    ``(x0, y0, x1, y1)`` (end exclusive) in the last stage's grid. Returns ``(N, y1-y0,
    x1-x0)``, equal within float rounding to computing the whole chain and cropping, at
    a cost proportional to the window. Each stage interpolates along x then y, like
    PyTorch's kernel.
    """
    torch = torch_module()
    x0, y0, x1, y1 = window
    taps_h = _chain_taps(int(x.shape[-2]), stages_h, y0, y1)
    taps_w = _chain_taps(int(x.shape[-1]), stages_w, x0, x1)
    if len(taps_h) != len(taps_w):
        raise InputError(f"resize chains differ in length: {len(stages_h)} row stages, {len(stages_w)} column stages")
    # the first stage reads a sub-rectangle of x; each later stage reads exactly the
    # range the previous stage produced (its indices are relative to that range)
    (ih, _, lo_h), (iw, _, lo_w) = taps_h[0], taps_w[0]
    out = x[:, lo_h : lo_h + int(ih.max()) + 1, lo_w : lo_w + int(iw.max()) + 1]
    dev = x.device
    for (ih, wh, _), (iw, ww, _) in zip(taps_h, taps_w):
        iw_t = torch.from_numpy(iw).to(dev)
        ww_t = torch.from_numpy(ww).to(dev, out.dtype)
        out = out[:, :, iw_t[:, 0]] * ww_t[:, 0] + out[:, :, iw_t[:, 1]] * ww_t[:, 1]
        ih_t = torch.from_numpy(ih).to(dev)
        wh_t = torch.from_numpy(wh).to(dev, out.dtype)
        out = out[:, ih_t[:, 0], :] * wh_t[:, 0, None] + out[:, ih_t[:, 1], :] * wh_t[:, 1, None]
    return out
