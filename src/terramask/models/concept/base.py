"""The concept-prompt protocol: ``(image window, phrases and/or exemplars) -> instances``.

A *concept backend* finds every instance of one or more classes in one image (a tile of
a scene). Every route implements :class:`ConceptBackend`:

- detector + SAM: an open-vocabulary detector gives boxes per phrase, a SAM-family
  backend turns each box into a mask;
- SAM 3: phrases and exemplar boxes return all instances with presence scores;
- find-similar: exemplar masks pooled into embedding prototypes, no extra model.

Coordinates crossing this boundary are pixels of the image passed to ``find`` (the
``tile`` frame: ``x=col, y=row``, corner origin, xyxy end-exclusive boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet

CLASS_COLUMN = "class"
"""Extra :class:`MaskSet` column: ``(K,)`` object array of ``str``, the class of each instance."""


@dataclass(frozen=True)
class ConceptQuery:
    """What to find in one image.

    - ``phrases``: text phrases, one class each (``"building"``); the class name of an
      instance found by a phrase is the phrase itself unless ``classes`` maps it.
    - ``exemplar_boxes``: ``(N, 4)`` float64 xyxy image pixels; ``exemplar_labels``:
      ``(N,)`` int64, 1 = example, 0 = counter-example; ``exemplar_class``: the class
      name given to instances found from exemplars (default ``"object"``);
      ``exemplar_classes``: optionally the class of each box (``N`` names; empty: every
      box is ``exemplar_class``). A box whose class is a phrase's class refines that
      phrase (SAM 3); see :func:`terramask.models.concept.sam3.concept_prompts`.
    - ``classes``: optional ``{phrase: class name}``.
    """

    phrases: tuple[str, ...] = ()
    exemplar_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    exemplar_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    exemplar_class: str = "object"
    classes: dict[str, str] = field(default_factory=dict)
    exemplar_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        phrases = tuple(check_phrase(p) for p in self.phrases)
        object.__setattr__(self, "phrases", phrases)
        boxes = np.asarray(self.exemplar_boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(self.exemplar_labels, dtype=np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise PromptError(f"{len(boxes)} exemplar boxes but {len(labels)} exemplar labels")
        if np.any((labels != 0) & (labels != 1)):
            raise PromptError("exemplar labels must be 1 (example) or 0 (counter-example)")
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise PromptError("exemplar boxes must be xyxy with x1 > x0 and y1 > y0")
        if self.exemplar_classes and len(self.exemplar_classes) != len(boxes):
            raise PromptError(f"{len(boxes)} exemplar boxes but {len(self.exemplar_classes)} exemplar classes")
        object.__setattr__(self, "exemplar_classes", tuple(str(c) for c in self.exemplar_classes))
        object.__setattr__(self, "exemplar_boxes", boxes)
        object.__setattr__(self, "exemplar_labels", labels)
        if not phrases and not len(boxes):
            raise PromptError("nothing to find: give at least one phrase or one exemplar")

    def class_of(self, phrase: str) -> str:
        """The class name of instances found by ``phrase``."""
        return self.classes.get(phrase, phrase)

    def box_classes(self) -> np.ndarray:
        """``(N,)`` object array: the class of each exemplar box."""
        names = self.exemplar_classes or (self.exemplar_class,) * len(self.exemplar_boxes)
        return np.array(names, dtype=object).reshape(-1)

    def text_only(self) -> "ConceptQuery":
        """This query without its exemplars (what a text-only route runs)."""
        return ConceptQuery(phrases=self.phrases, classes=dict(self.classes))


def check_phrase(phrase: str) -> str:
    """A phrase stripped of surrounding blanks; an empty phrase or one with control
    characters or a period (detectors use ``.`` to separate phrases) is a :class:`PromptError`."""
    if not isinstance(phrase, str):
        raise PromptError(f"a phrase must be text, got {type(phrase).__name__}")
    text = " ".join(phrase.split())
    if not text:
        raise PromptError("empty phrase: give a word or a few words, e.g. --text building")
    if any(ord(ch) < 32 for ch in phrase) or "." in text:
        raise PromptError(f"phrase {phrase!r} must be plain words without '.' or control characters; "
                          "give each class as its own phrase")
    return text


@runtime_checkable
class ConceptBackend(Protocol):
    """What every concept route offers.

    ``find(image, query)`` returns a :class:`MaskSet` on the image grid: ``masks (K, H, W)``
    bool, ``scores (K,)`` float32 (detector score / presence score / similarity),
    ``boxes (K, 4)`` xyxy, and extra columns ``class`` (``CLASS_COLUMN``: ``(K,)`` object
    array of str) and ``predicted_iou`` (``(K,)`` float32, the mask head's IoU estimate;
    equal to ``scores`` when the model has none). Instances are not yet de-duplicated
    across classes; per-class NMS is the caller's job.
    """

    name: str

    def find(self, image: GeoImage | np.ndarray, query: ConceptQuery) -> MaskSet: ...
