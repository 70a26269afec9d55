"""Open-vocabulary detectors: boxes per phrase from ``transformers``' Grounding DINO and OWLv2.

A detector answers ``detect(rgb (H, W, 3) uint8, phrases) -> Detections``: boxes in xyxy
image pixels (corner origin, ``x=col, y=row``), a score per box and the index of the
phrase that found it. The phrase index maps each box back to the *exact* phrase given
(not the tokenizer's lower-cased, re-spaced decoding of it), so classes keep the user's
spelling.

Post-processing is ours (numpy) and equal to the library's ``post_process_*`` output for
boxes and scores (tested); the phrase of a Grounding DINO box is the phrase whose tokens
hold its highest probability, kept when that probability passes ``text_threshold``
(the library instead decodes every token above the threshold into one string, which
mixes phrases).

Default thresholds, as documented by each detector:

- Grounding DINO: ``box_threshold=0.35``, ``text_threshold=0.25`` (the official
  IDEA-Research/GroundingDINO README's inference example; ``transformers``'
  ``post_process_grounded_object_detection`` defaults to 0.25/0.25);
- OWLv2: ``box_threshold=0.1`` (``transformers``' ``post_process_object_detection``
  default, as in the OWL-ViT/OWLv2 examples); it scores each phrase separately, so it has
  no text threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from terramask.core.errors import ModelError, PromptError
from terramask.core.lazy import require

logger = logging.getLogger(__name__)

GROUNDING_DINO_BOX_THRESHOLD = 0.35
GROUNDING_DINO_TEXT_THRESHOLD = 0.25
OWLV2_BOX_THRESHOLD = 0.1
CONCEPT_EXTRA = "concept"


@dataclass(frozen=True)
class Detections:
    """Boxes found in one image: ``boxes (N, 4)`` float64 xyxy image pixels,
    ``scores (N,)`` float32 in [0, 1], ``phrase_index (N,)`` int64 into the phrases asked."""

    boxes: np.ndarray
    scores: np.ndarray
    phrase_index: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        index = np.asarray(self.phrase_index, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(index):
            raise ValueError(f"detections with {len(boxes)} boxes, {len(scores)} scores, {len(index)} phrase indices")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "phrase_index", index)

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (int array or bool mask)."""
        return Detections(self.boxes[index], self.scores[index], self.phrase_index[index])


@runtime_checkable
class OpenVocabularyDetector(Protocol):
    """Boxes per phrase: ``detect(rgb (H, W, 3) uint8, phrases) -> Detections``."""

    name: str

    def detect(self, rgb: np.ndarray, phrases: tuple[str, ...]) -> Detections: ...


# ----------------------------------------------------------------- post-processing (numpy)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings (masked tokens carry ``-inf`` logits)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def cxcywh_to_pixels(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(N, 4)`` normalised ``cx, cy, w, h`` -> xyxy pixels of a ``width x height`` frame."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    return xyxy * np.array([width, height, width, height])


def phrase_token_spans(offsets: list[tuple[int, int]], text: str, phrases: tuple[str, ...]) -> list[np.ndarray]:
    """Token positions of each phrase in ``text`` (the phrases joined by ``". "``).

    ``offsets``: the fast tokenizer's ``(start, end)`` character span of every token of
    ``text`` (special tokens ``(0, 0)``). Returns one int64 array per phrase.
    """
    spans = []
    start = 0
    for phrase in phrases:
        begin = text.index(phrase, start)
        end = begin + len(phrase)
        tokens = [i for i, (a, b) in enumerate(offsets) if b > a and a >= begin and b <= end]
        if not tokens:
            raise PromptError(f"phrase {phrase!r} gives no tokens the detector knows")
        spans.append(np.asarray(tokens, dtype=np.int64))
        start = end
    return spans


def grounding_dino_detections(
    logits: np.ndarray,
    pred_boxes: np.ndarray,
    spans: list[np.ndarray],
    image_size: tuple[int, int],
    box_threshold: float = GROUNDING_DINO_BOX_THRESHOLD,
    text_threshold: float = GROUNDING_DINO_TEXT_THRESHOLD,
) -> Detections:
    """Grounding DINO's raw output for one image -> detections.

    ``logits (Q, T)`` token logits per query, ``pred_boxes (Q, 4)`` normalised cxcywh,
    ``spans`` the token positions of each phrase, ``image_size`` ``(rows, cols)``.
    A query is kept when its best token probability exceeds ``box_threshold`` (its score,
    as the library computes it) and the best phrase's best token exceeds ``text_threshold``.
    """
    probs = _sigmoid(np.asarray(logits))
    scores = probs.max(axis=-1)
    per_phrase = np.stack([probs[:, span].max(axis=-1) for span in spans], axis=1)  # (Q, P)
    best = per_phrase.argmax(axis=1)
    keep = (scores > box_threshold) & (per_phrase[np.arange(len(best)), best] > text_threshold)
    rows, cols = image_size
    boxes = cxcywh_to_pixels(np.asarray(pred_boxes)[keep], cols, rows)
    return Detections(boxes, scores[keep], best[keep])


def owlv2_detections(
    logits: np.ndarray, pred_boxes: np.ndarray, image_size: tuple[int, int], box_threshold: float = OWLV2_BOX_THRESHOLD
) -> Detections:
    """OWLv2's raw output for one image -> detections.

    ``logits (Q, P)`` per query and phrase, ``pred_boxes (Q, 4)`` normalised cxcywh of the
    square the processor padded the image to (bottom/right), ``image_size`` ``(rows, cols)``.
    """
    scores = _sigmoid(np.asarray(logits).max(axis=-1))
    labels = np.asarray(logits).argmax(axis=-1)
    keep = scores > box_threshold
    side = float(max(image_size))
    boxes = cxcywh_to_pixels(np.asarray(pred_boxes)[keep], side, side)
    return Detections(boxes, scores[keep], labels[keep])


# ------------------------------------------------------------------------- the detectors


def _torch() -> Any:
    return require("torch", CONCEPT_EXTRA)


def transformers_module() -> Any:
    """``transformers``, or :class:`MissingDependencyError` naming ``terramask[concept]``."""
    return require("transformers", CONCEPT_EXTRA)


def load_pretrained(loader: Any, directory: Path, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(directory)`` offline; a failure is one :class:`ModelError` line."""
    try:
        return loader.from_pretrained(str(directory), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ModelError(f"cannot load the {what} in {directory}: {reason}") from exc


class GroundingDinoDetector:
    """Grounding DINO (``GroundingDinoForObjectDetection`` + its processor).

    All phrases go in one prompt (``"building. solar panel."``), as the model was trained;
    Grounding DINO reads at most ``config.max_text_len`` tokens (256), so very long phrase
    lists are refused.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        box_threshold: float = GROUNDING_DINO_BOX_THRESHOLD,
        text_threshold: float = GROUNDING_DINO_TEXT_THRESHOLD,
        name: str = "grounding-dino",
        device: str = "cpu",
    ) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.max_tokens = int(getattr(model.config, "max_text_len", 256))
        self.name = name
        self.device = device

    @classmethod
    def from_pretrained(cls, directory: Path, device: str = "cpu", **kwargs: Any) -> GroundingDinoDetector:
        tf = transformers_module()
        model = load_pretrained(tf.GroundingDinoForObjectDetection, directory, "Grounding DINO model")
        processor = load_pretrained(tf.GroundingDinoProcessor, directory, "Grounding DINO processor")
        return cls(model, processor, device=device, **kwargs)

    def detect(self, rgb: np.ndarray, phrases: tuple[str, ...]) -> Detections:
        """Boxes for ``phrases`` in ``rgb`` ``(H, W, 3)`` uint8."""
        torch = _torch()
        text = ". ".join(phrases) + "."
        inputs = self.processor(images=rgb, text=text, return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        if len(ids) > self.max_tokens:
            raise PromptError(f"{len(phrases)} phrases make {len(ids)} tokens; Grounding DINO reads at most "
                              f"{self.max_tokens}: give fewer or shorter phrases per run")
        encoded = self.processor.tokenizer(text, return_offsets_mapping=True)
        if list(encoded["input_ids"]) != ids:
            raise ModelError("the Grounding DINO tokenizer does not reproduce the processor's tokens")
        spans = phrase_token_spans([tuple(o) for o in encoded["offset_mapping"]], text, phrases)
        with torch.inference_mode():
            out = self.model(**inputs.to(self.device))
        return grounding_dino_detections(
            out.logits[0].float().cpu().numpy(),
            out.pred_boxes[0].float().cpu().numpy(),
            spans,
            rgb.shape[:2],
            self.box_threshold,
            self.text_threshold,
        )


class Owlv2Detector:
    """OWLv2 (``Owlv2ForObjectDetection`` + its processor): each phrase is its own query text."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        box_threshold: float = OWLV2_BOX_THRESHOLD,
        name: str = "owlv2",
        device: str = "cpu",
    ) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.box_threshold = float(box_threshold)
        self.name = name
        self.device = device

    @classmethod
    def from_pretrained(cls, directory: Path, device: str = "cpu", **kwargs: Any) -> Owlv2Detector:
        tf = transformers_module()
        model = load_pretrained(tf.Owlv2ForObjectDetection, directory, "OWLv2 model")
        processor = load_pretrained(tf.Owlv2Processor, directory, "OWLv2 processor")
        return cls(model, processor, device=device, **kwargs)

    def detect(self, rgb: np.ndarray, phrases: tuple[str, ...]) -> Detections:
        """Boxes for ``phrases`` in ``rgb`` ``(H, W, 3)`` uint8."""
        torch = _torch()
        inputs = self.processor(text=[list(phrases)], images=rgb, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**inputs.to(self.device))
        return owlv2_detections(
            out.logits[0].float().cpu().numpy(), out.pred_boxes[0].float().cpu().numpy(), rgb.shape[:2], self.box_threshold
        )


DETECTOR_CLASSES: dict[str, type[GroundingDinoDetector] | type[Owlv2Detector]] = {
    "grounding-dino": GroundingDinoDetector,
    "owlv2": Owlv2Detector,
}
"""Registry family -> detector class."""
