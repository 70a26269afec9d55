"""Which model to use, and building its backend.

Resolution when no model name is given (issue 2, "Models"):

1. ``--checkpoint PATH`` without a name: the registry model whose official file name it
   has, else a SAM of the architecture found in the file;
2. ``$TERRAMASK_MODEL``;
3. the best SAM checkpoint already in the cache (``sam-vit-h`` > ``sam-vit-l`` > ``sam-vit-b``);
4. ``classic`` (weight-free), with a one-line notice naming the download command.

Backends are imported lazily here, so importing this module loads no torch.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from terramask.core.errors import InputError, ModelError, UnknownModelError
from terramask.core.lazy import require
from terramask.models.base import Backend
from terramask.models.download import ensure_checkpoint, is_cached
from terramask.models.finetune.run_dir import looks_like_run_dir, run_model
from terramask.models.finetune.trainable import Trainer
from terramask.models.registry import CONCEPT_FAMILIES, ModelSpec, get_spec, spec_for_filename

if TYPE_CHECKING:
    from terramask.models.runtime_choice import Measurement

logger = logging.getLogger(__name__)

ENV_MODEL = "TERRAMASK_MODEL"
FALLBACK = "classic"
# Best first: the model used when nothing is named and several are in the cache.
CACHE_PREFERENCE = ("sam-vit-h", "sam-vit-l", "sam-vit-b")
# inference runtimes: PyTorch; ONNX Runtime (float, int8 encoder) and OpenVINO over the ONNX
# export; ``auto``: the fastest measured on this machine (models.runtime_choice)
RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino", "auto")
EXPORT_RUNTIMES = ("onnx", "onnx-int8", "openvino")


def best_cached() -> str | None:
    """The preferred SAM model whose checkpoint is in the cache, or ``None``."""
    for name in CACHE_PREFERENCE:
        if is_cached(get_spec(name)):
            return name
    return None


def resolve_model_name(name: str | None = None) -> str:
    """The registry name to use: ``name``, else ``$TERRAMASK_MODEL``, else the best cached
    SAM checkpoint, else ``"classic"`` (logging a one-line notice at WARNING level).

    A fine-tuning run directory (``--model RUN_DIR``) resolves to its absolute path,
    which :func:`~terramask.models.registry.get_spec` turns into the run's spec.
    Raises :class:`UnknownModelError` for a name (or environment value) not in the registry.
    """
    if looks_like_run_dir(name):
        return str(Path(str(name)).expanduser().resolve())  # get_spec reads the run directory
    if name is not None and name.strip():
        return get_spec(name).name
    env = os.environ.get(ENV_MODEL, "").strip()
    if env:
        try:
            return get_spec(env).name
        except UnknownModelError as exc:
            raise UnknownModelError(f"{ENV_MODEL}={env!r}: {exc}") from exc
    cached = best_cached()
    if cached is not None:
        logger.info("using %s, found in the model cache", cached)
        return cached
    logger.warning(
        "no SAM checkpoint in the cache; using the weight-free 'classic' backend "
        "(get SAM with: terramask models download sam-vit-b)"
    )
    return FALLBACK


def spec_for_checkpoint(checkpoint: str | os.PathLike[str]) -> ModelSpec:
    """The spec to load a user-given checkpoint with when no model name is given.

    A file named like an official checkpoint gets that model's spec; anything else is
    taken as a SAM checkpoint whose architecture the backend reads from the file.
    """
    path = Path(checkpoint)
    spec = spec_for_filename(path.name)
    if spec is not None:
        return spec
    return ModelSpec(
        name=f"sam:{path.stem}",
        family="sam",
        arch=None,
        url=None,
        filename=path.name,
        sha256=None,
        size_bytes=None,
        licence="unknown (user checkpoint)",
        params_millions=None,
        when_to_use="user-given checkpoint",
    )


def _load_classic(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> Backend:
    if checkpoint is not None:
        raise InputError("the 'classic' model is weight-free; it takes no --checkpoint")
    classic = importlib.import_module("terramask.models.classic.backend")
    return classic.ClassicBackend()


def _load_sam(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> Backend:
    path = ensure_checkpoint(spec, checkpoint, download_missing=download)
    sam = importlib.import_module("terramask.models.sam.backend")
    return sam.SamBackend.from_checkpoint(path, arch=spec.arch, device=device, name=spec.name)


def _load_sam2(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> Backend:
    path = ensure_checkpoint(spec, checkpoint, download_missing=download)
    sam2 = importlib.import_module("terramask.models.sam2.backend")
    # a user checkpoint brings its own configuration (embedded, or read from its tensors)
    config = spec.config if checkpoint is None else None
    return sam2.Sam2Backend.from_checkpoint(path, config=config, device=device, name=spec.name)


def _load_mobilesam(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> Backend:
    path = ensure_checkpoint(spec, checkpoint, download_missing=download)
    mobilesam = importlib.import_module("terramask.models.sam.mobilesam")
    return mobilesam.MobileSamBackend.from_checkpoint(path, arch=spec.arch, device=device, name=spec.name)


# family -> loader(spec, checkpoint, device, download).
LOADERS: dict[str, Callable[[ModelSpec, Path | None, str, bool], Backend]] = {
    "classic": _load_classic,
    "sam": _load_sam,
    "sam2": _load_sam2,
    "mobilesam": _load_mobilesam,
}


def load_backend(
    name: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    download: bool = False,
    cache: bool = False,
) -> Backend:
    """Build the backend for ``name`` (resolved as :func:`resolve_model_name` does).

    ``checkpoint`` is a local file to load instead of the cached one; given without a
    name it selects a SAM model (see :func:`spec_for_checkpoint`). ``download`` fetches a
    missing checkpoint into the cache; otherwise a missing one raises
    :class:`WeightsNotFoundError` naming ``terramask models download NAME``.
    ``cache=True`` wraps backends that have an image encoder in
    :class:`~terramask.models.embedding_cache.CachedBackend` (the persistent embedding
    cache shared by every process). The opt-in malloc settings of
    :mod:`terramask.models.allocator` (``TERRAMASK_MALLOC=tuned``) are applied once, before the model loads.
    ``runtime``: ``torch``, ``onnx``, ``onnx-int8`` or ``openvino`` (every family with weights;
    the checkpoint is exported to ONNX once into ``<cache>/onnx/``, or ``checkpoint`` names an
    export directory; ``onnx-int8`` uses the int8-quantised encoder, which changes results;
    ``openvino`` compiles the export for this CPU), or ``auto``: the runtime measured fastest
    for the model's family on this machine (:mod:`terramask.models.runtime_choice`; measured
    on first use, then cached; ``torch`` for weight-free models and non-CPU devices).
    ``name`` may be a fine-tuning run directory (``terramask finetune --out RUN_DIR``):
    its checkpoint and family are used.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    run = run_model(name)
    if run is not None:
        if ckpt is not None:
            raise InputError(f"--model {name} is a fine-tuning run with its own checkpoint; drop --checkpoint")
        ckpt = run.checkpoint
    if runtime != "torch" and ckpt is not None and ckpt.is_dir():
        # an ONNX export directory given directly
        if runtime == "auto":
            raise InputError(f"--checkpoint {ckpt} is an ONNX export directory: name its runtime "
                             f"({', '.join(EXPORT_RUNTIMES)}) instead of auto")
        from terramask.models.allocator import configure_allocator

        configure_allocator()
        return _maybe_cached(_open_export(ckpt, name.strip() if name and name.strip() else None, runtime), cache, None)
    if ckpt is not None and (name is None or not name.strip()):
        spec = spec_for_checkpoint(ckpt)
    else:
        spec = get_spec(resolve_model_name(name))
    loader = LOADERS.get(spec.family)
    if loader is None and spec.family in CONCEPT_FAMILIES:
        route = "--model sam3" if spec.family == "sam3" else f"--detector {spec.name}"
        raise ModelError(f"model {spec.name!r} finds objects from text, not from clicks or a grid of points: "
                         f"use terramask find SCENE --text PHRASE {route}")
    if loader is None:
        raise ModelError(f"model {spec.name!r} (family {spec.family}) has no backend in this installation")
    logger.info("loading model %s (%s) on %s", spec.name, spec.family, device)
    from terramask.models.allocator import configure_allocator

    configure_allocator()
    if runtime == "auto":
        runtime = _auto_runtime(spec, ckpt, device, download)
    if runtime == "torch":
        backend = loader(spec, ckpt, device, download)
        return _maybe_cached(backend, cache and spec.needs_weights, spec.sha256 if ckpt is None else None)
    return _maybe_cached(_load_exported(spec, ckpt, download, runtime), cache, None)


def _runtime_loader(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> Callable[[str], Backend]:
    """``runtime -> backend`` for ``spec``: what a runtime measurement loads."""

    def load(runtime: str) -> Backend:
        if runtime == "torch":
            return LOADERS[spec.family](spec, checkpoint, device, download)
        return _load_exported(spec, checkpoint, download, runtime)

    return load


def _auto_runtime(spec: ModelSpec, checkpoint: Path | None, device: str, download: bool) -> str:
    """``--runtime auto``: the runtime measured fastest for ``spec``'s family here (measured
    with this model on first use). Weight-free models and GPUs use torch."""
    from terramask.models.onnx.export import EXPORTABLE_FAMILIES

    if spec.family not in EXPORTABLE_FAMILIES or device != "cpu":
        return "torch"
    ensure_checkpoint(spec, checkpoint, download_missing=download)  # a missing file says so, once
    from terramask.models.runtime_choice import choose_runtime

    choice = choose_runtime(spec.family, spec.name, _runtime_loader(spec, checkpoint, device, download))
    logger.info("runtime auto: %s for %s", choice, spec.name)
    return choice


def measure_runtimes(
    name: str, checkpoint: str | os.PathLike[str] | None = None, download: bool = False
) -> Measurement:
    """Measure every installed runtime on model ``name`` now (``terramask doctor --measure``),
    record the result as its family's runtime choice for this machine and return the
    :class:`~terramask.models.runtime_choice.Measurement`. Raises :class:`ModelError` for a
    model the ONNX-based runtimes do not cover (the weight-free engine)."""
    from terramask.models.onnx.export import EXPORTABLE_FAMILIES
    from terramask.models.runtime_choice import ChoiceCache, available_runtimes, measure_family

    spec = get_spec(resolve_model_name(name))
    if spec.family not in EXPORTABLE_FAMILIES:
        raise ModelError(f"model {spec.name!r} ({spec.family}) runs only on torch; nothing to measure "
                         f"(runtimes are measured for {', '.join(EXPORTABLE_FAMILIES)})")
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    ensure_checkpoint(spec, ckpt, download_missing=download)
    from terramask.models.allocator import configure_allocator

    configure_allocator()
    measured = measure_family(spec.family, spec.name, available_runtimes(), _runtime_loader(spec, ckpt, "cpu", download))
    ChoiceCache().put(measured)
    return measured


def _open_export(directory: Path, name: str | None, runtime: str) -> Backend:
    """The ``runtime`` (one of :data:`EXPORT_RUNTIMES`) backend over an ONNX export directory."""
    if runtime == "openvino":
        from terramask.models.openvino.backend import open_openvino_backend

        return open_openvino_backend(directory, name=name)
    from terramask.models.onnx.backend import open_onnx_backend

    if runtime == "onnx-int8":  # offered only where measured faster and >= 0.98 mean IoU
        from terramask.models.onnx.quantize import offer_int8

        offer_int8(directory, name or directory.name)
    return open_onnx_backend(directory, name=name, quantized=runtime == "onnx-int8")


def _maybe_cached(backend: Backend, cache: bool, weights_id: str | None) -> Backend:
    if not cache:
        return backend
    from terramask.models.embedding_cache import CachedBackend

    return CachedBackend(backend, weights_id=weights_id)


def onnx_export_dir(spec: ModelSpec, weights_sha256: str) -> Path:
    """Where the ONNX export of ``spec``'s weights lives: ``<cache>/onnx/<name>-<sha12>``."""
    from terramask.models.cachedir import cache_dir

    safe = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in spec.name)
    return cache_dir() / "onnx" / f"{safe}-{weights_sha256[:12]}"


def _load_exported(spec: ModelSpec, checkpoint: Path | None, download: bool, runtime: str) -> Backend:
    """The ONNX Runtime or OpenVINO backend (``runtime`` in :data:`EXPORT_RUNTIMES`) for
    ``spec`` (SAM, MobileSAM, SAM 2), exporting the checkpoint to ONNX into the cache on
    first use (once per weights file)."""
    from terramask.models.onnx import export as onnx_export

    if spec.family not in onnx_export.EXPORTABLE_FAMILIES:
        label = "OpenVINO" if runtime == "openvino" else "ONNX"
        raise ModelError(
            f"model {spec.name!r} ({spec.family}) has no {label} runtime; "
            f"use --runtime torch ({label} covers {', '.join(onnx_export.EXPORTABLE_FAMILIES)})"
        )
    if runtime == "openvino":
        require("openvino", "openvino")  # the install hint before a long export
    quantized = runtime == "onnx-int8"
    path = ensure_checkpoint(spec, checkpoint, download_missing=download)
    if checkpoint is None and spec.sha256:
        sha = spec.sha256  # the cached file was verified against it
    else:
        from terramask.models.embedding_keys import weights_id

        sha = weights_id(path)
    out = onnx_export_dir(spec, sha)
    try:
        meta = onnx_export.read_metadata(out)
    except InputError:
        meta = None
    if meta is None:
        logger.warning("exporting %s to ONNX in %s (once per weights file; this takes a while)", spec.name, out)
        onnx_export.export_spec(spec, out, checkpoint=path, quantize=quantized, overwrite=True)
    else:
        onnx_export.ensure_staged(out)  # an export by an older terramask gets the staged decoder (once)
        if quantized:  # quantise and check an export made without int8 (once; a no-op after)
            from terramask.models.onnx.quantize import ensure_int8

            ensure_int8(out)
    return _open_export(out, spec.name, runtime)


# backend classes with a trainable SAM mask decoder -> (family, how to name the architecture)
_TRAINABLE = {
    "terramask.models.sam.mobilesam.MobileSamBackend": "mobilesam",
    "terramask.models.sam.backend.SamBackend": "sam",
    "terramask.models.sam2.backend.Sam2Backend": "sam2",
}


def load_trainer(
    backend: Backend, mode: str = "decoder", lr: float = 1e-4, weight_decay: float = 1e-4
) -> Trainer:
    """A :class:`~terramask.models.finetune.trainable.Trainer` over ``backend`` (trained in
    place), for SAM v1 (any size), MobileSAM and SAM 2/2.1 (decoder only). An embedding-cache wrapper is looked
    through: the trainer's ``backend`` stays the cached one while the encoder is frozen.
    Any other model (classic, ONNX) raises :class:`ModelError` naming what can be
    fine-tuned.
    """
    inner = backend
    while hasattr(inner, "cache") and hasattr(inner, "backend"):  # CachedBackend
        inner = inner.backend
    kind = f"{type(inner).__module__}.{type(inner).__qualname__}"
    family = _TRAINABLE.get(kind)
    if family is None:
        raise ModelError(
            f"model {getattr(backend, 'name', kind)!r} ({type(inner).__name__}) has no trainable mask decoder here; "
            "fine-tune a SAM or MobileSAM model (e.g. --model sam-vit-b, or --checkpoint a SAM .pth), torch runtime"
        )
    # with a frozen encoder the cached embeddings stay valid: predict through the cache
    served = backend if mode == "decoder" else None
    if family == "sam2":
        sam2_trainer = importlib.import_module("terramask.models.finetune.sam2_trainer")
        arch = str(getattr(inner, "config", None) or "sam2")
        return sam2_trainer.Sam2Trainer(inner, family, arch, mode=mode, lr=lr, weight_decay=weight_decay, served=served)
    sam_trainer = importlib.import_module("terramask.models.finetune.sam_trainer")
    arch = "vit_t" if family == "mobilesam" else str(inner.arch.name)  # type: ignore[attr-defined]
    return sam_trainer.SamTrainer(inner, family, arch, mode=mode, lr=lr, weight_decay=weight_decay, served=served)


def check_own_generate_options(family: str, values: dict) -> bool:
    """Validate ``values`` as options of the ``generate`` a model ``family`` has of its own
    (the ``Generator`` capability: ``classic``'s ``superpixels``, ``merge_thresh`` ...).

    Returns False when the family has no such options (it segments only through point
    prompts); raises :class:`InputError` naming the known options for unknown or bad values.
    """
    if family != "classic":
        return False
    from dataclasses import fields

    auto = importlib.import_module("terramask.models.classic.auto")
    known = {f.name for f in fields(auto.AutoParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"unknown parameter(s) {', '.join(unknown)} for the classic model; its own options are "
            f"{', '.join(sorted(known))}"
        )
    auto.AutoParams(**values).validate()
    return True
