"""Phrases and exemplars together on the detector + SAM route: one concept backend that
runs both and hands back one mask set.

``TextAndSimilar(text, similar).find(image, query)``:

- ``text`` (a :class:`~terramask.models.concept.detector_sam.DetectorSam`) finds the
  query's phrases (its exemplars removed: a detector reads no boxes);
- ``similar`` (a :class:`~terramask.models.concept.similar.SimilarFinder` with the
  scene's prototypes, built on the same SAM-family backend) finds objects like the
  exemplars; counter-examples steer only this part;
- the two are stacked with their common columns (``class``, ``predicted_iou``); each
  object keeps its class: the phrase's, or its exemplars' class. Duplicates (a building
  found by ``--text building`` and by a building exemplar) are removed by the caller's
  per-class NMS (:func:`terramask.core.boxes.per_class_nms`), best score first.

Masks, boxes and columns are on the image grid (``tile`` frame), as every concept route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.concept.base import CLASS_COLUMN, ConceptBackend, ConceptQuery

PREDICTED_IOU = "predicted_iou"
#: The columns every concept route gives; the combined set keeps only these.
COMMON = (CLASS_COLUMN, PREDICTED_IOU)


def common_columns(found: MaskSet) -> MaskSet:
    """``found`` with only the :data:`COMMON` extra columns (``predicted_iou``: ``scores``
    when the route has none)."""
    extras = {
        CLASS_COLUMN: np.asarray(found[CLASS_COLUMN], dtype=object),
        PREDICTED_IOU: np.asarray(found[PREDICTED_IOU] if PREDICTED_IOU in found else found.scores, dtype=np.float32),
    }
    return MaskSet(found.masks, found.scores, found.boxes, extras, found.transform, found.crs)


class TextAndSimilar:
    """Text detections and find-similar results in one :class:`ConceptBackend` (module docstring)."""

    def __init__(self, text: ConceptBackend, similar: ConceptBackend) -> None:
        self.text = text
        self.similar = similar
        self.name = str(getattr(text, "name", "text"))

    def find(self, image: GeoImage | np.ndarray, query: ConceptQuery) -> MaskSet:
        """Instances of ``query``'s phrases and of the exemplars' classes in ``image``."""
        parts = []
        if query.phrases:
            parts.append(common_columns(self.text.find(image, query.text_only())))
        parts.append(common_columns(self.similar.find(image, None)))  # type: ignore[arg-type]  # its prototypes
        return parts[0] if len(parts) == 1 else MaskSet.concat(parts)

    def describe(self) -> dict[str, Any]:
        own = getattr(self.similar, "describe", None)
        return {"model": self.name, "similar": dict(own()) if callable(own) else {}}
