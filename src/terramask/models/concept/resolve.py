"""Which concept backend to use, and building it.

:func:`load_concept_backend` picks the route:

- ``model`` names SAM 3 (``sam3``), or ``checkpoint`` is a Hugging Face folder whose
  ``config.json`` says ``sam3``: :class:`~terramask.models.concept.sam3.Sam3ConceptBackend`;
- otherwise detector + SAM: the ``detector`` (default ``grounding-dino-tiny``; aliases
  ``grounding-dino``, ``owlv2``) gives boxes, and the SAM-family backend ``model`` /
  ``checkpoint`` (resolved like every other command, :func:`terramask.models.resolve.load_backend`)
  masks them.

Detector and SAM 3 weights are Hugging Face snapshots (:mod:`terramask.models.snapshot`):
the cache, a download (``download=True``), or a local folder (``detector_checkpoint``,
``checkpoint``). A folder whose ``config.json`` names another architecture is refused
with one line, before any weights load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from terramask.core.errors import InputError, ModelError, UnknownModelError
from terramask.models.base import Backend
from terramask.models.concept.base import ConceptBackend
from terramask.models.download import ensure_checkpoint
from terramask.models.registry import DETECTOR_FAMILIES, ModelSpec, get_spec, list_specs, normalise_name
from terramask.models.snapshot import local_snapshot, read_config

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "grounding-dino-tiny"
DETECTOR_ALIASES = {"grounding-dino": "grounding-dino-tiny", "gdino": "grounding-dino-tiny", "owlv2": "owlv2-base"}
# registry family -> the model_type its config.json must have, and the name users know it by
MODEL_TYPES = {"grounding-dino": "grounding-dino", "owlv2": "owlv2", "sam3": "sam3"}
FAMILY_TITLES = {"grounding-dino": "Grounding DINO", "owlv2": "OWLv2", "sam3": "SAM 3"}
# config.json model_type -> the registry name a folder given as --detector loads as
FOLDER_NAMES = {"grounding-dino": "grounding-dino-tiny", "owlv2": "owlv2-base", "sam3": "sam3"}


def detector_or_folder(detector: str | None, detector_checkpoint: str | os.PathLike[str] | None
                       ) -> tuple[str | None, str | os.PathLike[str] | None]:
    """``(detector name, its folder)`` from ``--detector NAME_OR_FOLDER``: a folder (an
    existing path) is a Hugging Face snapshot whose ``config.json`` names the architecture
    (Grounding DINO, OWLv2 or SAM 3); a name is returned as given."""
    if detector is None or detector_checkpoint is not None or not Path(detector).expanduser().exists():
        return detector, detector_checkpoint
    folder = local_snapshot(detector)
    model_type = read_config(folder).get("model_type")
    if model_type not in FOLDER_NAMES:
        raise ModelError(f"{folder} is not a detector or SAM 3 checkpoint: its config.json has model_type "
                         f"{model_type!r}, expected one of {', '.join(FOLDER_NAMES)}")
    return FOLDER_NAMES[model_type], folder


def detector_names() -> list[str]:
    """Registry names of the open-vocabulary detectors, in display order."""
    return [spec.name for family in DETECTOR_FAMILIES for spec in list_specs(family)]


def detector_spec(name: str) -> ModelSpec:
    """The registry spec of detector ``name`` (aliases, case and ``_`` forgiven);
    :class:`UnknownModelError` listing the detectors otherwise."""
    key = normalise_name(name)
    key = DETECTOR_ALIASES.get(key, key)
    try:
        spec = get_spec(key)
    except UnknownModelError:
        spec = None
    if spec is None or spec.family not in DETECTOR_FAMILIES:
        raise UnknownModelError(
            f"unknown detector {name!r}; available: {', '.join(detector_names())} "
            f"(aliases: {', '.join(DETECTOR_ALIASES)})"
        )
    return spec


def checked_snapshot(spec: ModelSpec, checkpoint: str | os.PathLike[str] | None, download: bool) -> Path:
    """``spec``'s snapshot directory (cache, download or ``checkpoint``), its ``config.json``
    checked to be ``spec``'s architecture: :class:`ModelError` naming the folder otherwise."""
    directory = ensure_checkpoint(spec, checkpoint, download_missing=download)
    expected = MODEL_TYPES[spec.family]
    found = read_config(directory).get("model_type")
    if found != expected:
        raise ModelError(
            f"{directory} is not a {FAMILY_TITLES[spec.family]} checkpoint: its config.json has model_type "
            f"{found!r}, expected {expected!r}"
        )
    return directory


def load_detector(
    name: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    download: bool = False,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
) -> Any:
    """The detector ``name`` (default :data:`DEFAULT_DETECTOR`) with its documented default
    thresholds unless given (see :mod:`terramask.models.concept.detectors`)."""
    from terramask.models.concept import detectors

    spec = detector_spec(name or DEFAULT_DETECTOR)
    directory = checked_snapshot(spec, checkpoint, download)
    kwargs: dict[str, Any] = {"name": spec.name, "device": device}
    if box_threshold is not None:
        kwargs["box_threshold"] = _unit(box_threshold, "box threshold")
    if spec.family == "grounding-dino":
        if text_threshold is not None:
            kwargs["text_threshold"] = _unit(text_threshold, "text threshold")
    elif text_threshold is not None:
        raise InputError(f"{spec.name} scores each phrase separately and has no text threshold; drop --text-threshold")
    return detectors.DETECTOR_CLASSES[spec.family].from_pretrained(directory, **kwargs)


def _unit(value: float, what: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"the {what} must be between 0 and 1, got {value}")
    return float(value)


def _is_sam3(model: str | None, checkpoint: str | os.PathLike[str] | None) -> bool:
    if model is not None and model.strip():
        try:
            return get_spec(model).family == "sam3"
        except UnknownModelError:
            return False
    if checkpoint is None or not Path(checkpoint).expanduser().is_dir():
        return False
    try:
        return read_config(local_snapshot(checkpoint)).get("model_type") == "sam3"
    except ModelError:
        return False


def load_concept_backend(
    model: str | None = None,
    detector: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    detector_checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    download: bool = False,
    cache: bool = False,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
    threshold: float | None = None,
    batch_boxes: int = 16,
) -> ConceptBackend:
    """The concept backend for ``model`` / ``detector`` (see the module docstring).

    ``box_threshold``/``text_threshold`` tune the detector, ``threshold`` SAM 3's instance
    score; ``runtime``/``cache`` apply to the SAM-family backend of the detector route.
    ``detector="sam3"`` also selects SAM 3 (its weights from ``detector_checkpoint``); the
    SAM-family ``model`` is then not needed, and a notice says so when one is given.
    ``detector`` may also be a snapshot folder (:func:`detector_or_folder`).
    """
    detector, detector_checkpoint = detector_or_folder(detector, detector_checkpoint)
    if detector is not None and _is_sam3(detector, None):
        if checkpoint is not None:
            raise InputError("with SAM 3 as the detector, give its folder as the detector checkpoint, not --checkpoint")
        if model is not None and model.strip():
            logger.warning("SAM 3 segments by itself; model %s is not used", model)
        model, detector, checkpoint, detector_checkpoint = detector, None, detector_checkpoint, None
    if _is_sam3(model, checkpoint):
        from terramask.models.concept.sam3 import Sam3ConceptBackend

        if detector is not None or detector_checkpoint is not None:
            raise InputError("SAM 3 finds instances by itself; drop --detector (or pick a SAM model to pair it with)")
        if box_threshold is not None or text_threshold is not None:
            raise InputError("--box-threshold/--text-threshold tune a detector; SAM 3 takes --threshold")
        spec = get_spec(model) if model else get_spec("sam3")
        directory = checked_snapshot(spec, checkpoint, download)
        kwargs: dict[str, Any] = {"name": spec.name, "device": device}
        if threshold is not None:
            kwargs["threshold"] = _unit(threshold, "threshold")
        return Sam3ConceptBackend.from_pretrained(directory, **kwargs)
    if threshold is not None:
        raise InputError("--threshold is SAM 3's instance score; the detector route takes --box-threshold")
    if model is not None and model.strip() and get_spec(model).family in DETECTOR_FAMILIES:
        raise InputError(f"{get_spec(model).name} is a detector: pass it as the detector, with a SAM model as the model")
    from terramask.models.concept.detector_sam import DetectorSam
    from terramask.models.resolve import load_backend

    found = load_detector(
        detector, detector_checkpoint, device=device, download=download,
        box_threshold=box_threshold, text_threshold=text_threshold,
    )
    backend = load_backend(model, checkpoint, device=device, runtime=runtime, download=download, cache=cache)
    return DetectorSam(found, backend, batch_boxes=batch_boxes)


@dataclass
class TextModel:
    """A text model loaded once for a server (``terramask serve --detector``) and paired
    with the SAM-family backend of each view: ``detector`` (detector + SAM route) or
    ``sam3`` (a SAM 3 concept backend, which needs no SAM model)."""

    name: str
    detector: Any = None
    sam3: ConceptBackend | None = None

    def concept_for(self, backend: Backend, guard: Callable[[Any], Any] = lambda model: model) -> ConceptBackend:
        """The concept backend for phrases with ``backend`` masking the detector's boxes;
        ``guard`` wraps each model first (the web app's lock and cancel check)."""
        if self.sam3 is not None:
            return guard(self.sam3)
        from terramask.models.concept.detector_sam import DetectorSam

        return DetectorSam(guard(self.detector), guard(backend))


def load_text_model(
    detector: str,
    detector_checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    download: bool = False,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
    threshold: float | None = None,
) -> TextModel:
    """The text model ``detector`` (a registry name, ``sam3``, or a snapshot folder), with
    the same checks and thresholds as :func:`load_concept_backend`."""
    name, detector_checkpoint = detector_or_folder(detector, detector_checkpoint)
    if name is not None and _is_sam3(name, None):
        sam3 = load_concept_backend(detector=name, detector_checkpoint=detector_checkpoint, device=device,
                                    download=download, box_threshold=box_threshold, text_threshold=text_threshold,
                                    threshold=threshold)
        return TextModel(str(getattr(sam3, "name", "sam3")), sam3=sam3)
    if threshold is not None:
        raise InputError("--threshold is SAM 3's instance score; the detector route takes --box-threshold")
    found = load_detector(name, detector_checkpoint, device=device, download=download,
                          box_threshold=box_threshold, text_threshold=text_threshold)
    return TextModel(str(found.name), detector=found)
