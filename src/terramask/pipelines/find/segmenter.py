"""The tile segmenter of ``terramask find``: a concept backend's instances with classes.

:class:`FindSegmenter` has the shape :func:`terramask.pipelines.scene.run.run_scene`
expects of a segmenter factory, plus ``classes`` (which makes the run *classed*: a class
raster, ``class``/``score`` columns, an overlay by class). It holds loaded models, so it
runs on the local engine only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from terramask.core.boxes import per_class_nms as nms_by_class
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.concept.base import CLASS_COLUMN, ConceptBackend, ConceptQuery

if TYPE_CHECKING:
    from terramask.pipelines.find.exemplars import SceneBoxes


def per_class_nms(found: MaskSet, iou_thresh: float) -> MaskSet:
    """``found`` without duplicates: greedy box NMS (``scores``) within each class, best first."""
    if len(found) < 2:
        return found
    classes = np.asarray(found[CLASS_COLUMN], dtype=object)
    return found[nms_by_class(found.boxes, found.scores, classes, iou_thresh)]


@dataclass(frozen=True)
class FindSegmenter:
    """``FindSegmenter(concept, query, classes)()`` -> ``segment_tile(image) -> MaskSet``.

    ``concept``: a :class:`~terramask.models.concept.base.ConceptBackend` (find-similar with
    its prototypes, or a text route); ``query``: what to find (None for find-similar, whose
    prototypes are the query); ``classes``: the class names in table order;
    ``nms_thresh``: box IoU above which masks of one class in one tile are duplicates;
    ``boxes``: exemplar boxes of the scene for a route that reads boxes (SAM 3): each tile's
    query gets those lying in the tile.
    """

    shippable: ClassVar[bool] = False

    concept: ConceptBackend
    query: ConceptQuery | None
    classes: tuple[str, ...]
    nms_thresh: float = 0.7
    route: str = "find-similar"
    boxes: "SceneBoxes | None" = None

    def __call__(self):
        return self.segment

    def segment(self, image: GeoImage) -> MaskSet:
        query = self.query
        if self.boxes is not None and query is not None:
            query = self.boxes.query_for(image, query)
        found = self.concept.find(image, query)  # type: ignore[arg-type]  # find-similar takes None
        return per_class_nms(found, self.nms_thresh)

    def describe(self) -> dict:
        own = getattr(self.concept, "describe", None)
        params: dict[str, Any] = dict(own()) if callable(own) else {}
        if self.query is not None:
            params["phrases"] = list(self.query.phrases)
        if self.boxes is not None:
            params["exemplar_boxes"] = {"examples": int((self.boxes.labels == 1).sum()),
                                        "counter_examples": int((self.boxes.labels == 0).sum())}
        params["nms_thresh"] = self.nms_thresh
        model = params.get("model") or getattr(self.concept, "name", type(self.concept).__name__)
        return {"model": model, "mode": self.route, "classes": list(self.classes), "params": params}
