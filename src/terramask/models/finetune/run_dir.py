"""A fine-tuning run directory as a model: ``--model RUN_DIR`` anywhere a model is named.

``RUN_DIR/terramask.json`` (written by ``terramask finetune``) names the base model, the
family and architecture, the checkpoint file (official format, ``model.pth``) and its
SHA-256. :func:`run_model` reads it into a :class:`RunModel` whose ``spec`` is a
registry-like :class:`~terramask.models.registry.ModelSpec`, so
:func:`terramask.models.registry.get_spec` and
:func:`terramask.models.resolve.load_backend` accept the directory like a model name.
Pure JSON: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramask.core.errors import InputError

RUN_FILE = "terramask.json"
CHECKPOINT_FILE = "model.pth"
RUN_FORMAT = "terramask-finetune/1"


@dataclass(frozen=True)
class RunModel:
    """A run directory resolved: ``root``, the ``checkpoint`` path, the model ``spec``
    and the whole ``terramask.json`` as ``info``."""

    root: Path
    checkpoint: Path
    spec: Any  # ModelSpec (imported lazily: registry imports this module)
    info: dict


def looks_like_run_dir(name: str | None) -> bool:
    """Whether ``name`` is a directory holding ``terramask.json`` (cheap: two stats)."""
    if not name or not name.strip():
        return False
    path = Path(name).expanduser()
    return path.is_dir() and (path / RUN_FILE).is_file()


def run_model(name: str | None) -> RunModel | None:
    """The :class:`RunModel` of directory ``name``, ``None`` when it is no run directory.

    Raises :class:`InputError` for a ``terramask.json`` that cannot be read, of another
    format, or whose checkpoint is missing (an unfinished run: no best model yet).
    """
    if name is None or not looks_like_run_dir(name):
        return None
    from terramask.models.registry import ModelSpec

    root = Path(name).expanduser().resolve()
    meta = root / RUN_FILE
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta}: cannot read the run description ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise InputError(f"{meta}: not a terramask fine-tuning run (format {info.get('format') if isinstance(info, dict) else None!r})")
    ckpt = root / str(info.get("checkpoint", CHECKPOINT_FILE))
    if not ckpt.is_file():
        raise InputError(f"{root}: the run has no checkpoint yet ({ckpt.name} missing); finish or resume `terramask finetune`")
    base = info.get("base_model", {})
    spec = ModelSpec(
        name=str(info.get("name") or f"{base.get('name', 'sam')}@{root.name}"),
        family=str(base.get("family", "sam")),
        arch=base.get("arch"),
        url=None,
        filename=ckpt.name,
        sha256=info.get("checkpoint_sha256"),
        size_bytes=None,
        licence=str(base.get("licence", "as the base model")),
        params_millions=None,
        when_to_use=f"fine-tuned from {base.get('name', '?')} on {info.get('data', {}).get('name', '?')}",
    )
    return RunModel(root, ckpt, spec, info)
