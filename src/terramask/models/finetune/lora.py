"""Low-rank adapters (LoRA, Hu et al. 2021) on the image encoder's attention, without ``peft``.

``peft`` is not a dependency of terramask: the adapter needed here is a dozen lines.
:func:`add_lora` replaces every ``qkv`` :class:`torch.nn.Linear` of an image encoder
(SAM's ViT blocks, MobileSAM's TinyViT attention) by :class:`LoRALinear`:
``y = W x + b + (alpha / r) * B (A x)`` with ``A (r, in)`` random and ``B (out, r)``
zero, so the model starts out unchanged; only ``A`` and ``B`` train.
:func:`merged_state_dict` folds ``(alpha / r) * B A`` into ``W`` and returns the state
dict under the official tensor names, so a checkpoint with adapters loads in the
official predictor like any other.
"""

from __future__ import annotations

import math
from typing import Any

from terramask.models.torch_utils import torch_module

DEFAULT_RANK = 4
DEFAULT_ALPHA = 4.0


def _lora_class() -> Any:
    torch = torch_module()

    class LoRALinear(torch.nn.Module):  # type: ignore[name-defined]
        """``base(x) + scale * (x A^T) B^T``; ``base`` frozen."""

        def __init__(self, base: Any, rank: int, alpha: float) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            self.lora_a = torch.nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
            torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

        def merged_weight(self) -> Any:
            return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    return LoRALinear


def add_lora(encoder: Any, rank: int = DEFAULT_RANK, alpha: float = DEFAULT_ALPHA) -> list[Any]:
    """Wrap every ``*.qkv`` Linear of ``encoder`` in place; returns the adapter parameters."""
    torch = torch_module()
    cls = _lora_class()
    params: list[Any] = []
    targets = [(name, mod) for name, mod in encoder.named_modules() if name.endswith("qkv") and isinstance(mod, torch.nn.Linear)]
    for name, mod in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        wrapped = cls(mod, rank, alpha).to(mod.weight.device)
        setattr(parent, attr, wrapped)
        params += [wrapped.lora_a, wrapped.lora_b]
    return params


def merged_state_dict(model: Any) -> dict[str, Any]:
    """``model.state_dict()`` with adapters folded into their base weights and the
    official names restored (``...qkv.base.weight`` -> ``...qkv.weight``)."""
    state = model.state_dict()
    out: dict[str, Any] = {}
    merged: dict[str, Any] = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "merged_weight") and hasattr(mod, "lora_a"):
            merged[name] = mod.merged_weight().detach()
    for key, value in state.items():
        owner = next((m for m in merged if key.startswith(m + ".")), None)
        if owner is None:
            out[key] = value.detach().clone()
            continue
        rest = key[len(owner) + 1 :]
        if rest.startswith("lora_"):
            continue
        if rest == "base.weight":
            out[f"{owner}.weight"] = merged[owner].clone()
        elif rest.startswith("base."):
            out[f"{owner}.{rest[5:]}"] = value.detach().clone()
    return out
