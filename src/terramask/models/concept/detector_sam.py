"""Detector + SAM: an open-vocabulary detector's boxes prompt any SAM-family backend.

``find(image, query)``:

1. the detector gives boxes per phrase (:mod:`terramask.models.concept.detectors`);
2. boxes are clipped to the image, tiny ones dropped, and per-class NMS
   (``nms_iou``) removes duplicates within the image (cross-tile merging is the scene
   pipeline's job);
3. the backend encodes the image once (only when something was detected) and decodes
   one mask per box, ``batch_boxes`` boxes per ``predict`` call (the protocol's
   "several boxes give one mask per box, in box order");
4. instances with an empty mask are dropped.

Result: a :class:`MaskSet` on the image grid with ``scores`` = detector score,
``boxes`` = the masks' boxes, and columns ``class`` (the query's class of the phrase
that found it), ``predicted_iou`` (the SAM decoder's IoU estimate) and ``detector_box``
(``(K, 4)`` float64 xyxy, the box that prompted the mask).
"""

from __future__ import annotations

import logging

import numpy as np

from terramask.core.boxes import per_class_nms as nms_by_class
from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Backend, as_rgb8
from terramask.models.concept.base import CLASS_COLUMN, ConceptQuery
from terramask.models.concept.detectors import Detections, OpenVocabularyDetector

logger = logging.getLogger(__name__)

PREDICTED_IOU = "predicted_iou"
DETECTOR_BOX = "detector_box"


def clip_boxes(det: Detections, image_size: tuple[int, int], min_side: float = 1.0) -> Detections:
    """Boxes clipped to the ``(rows, cols)`` image; those narrower than ``min_side`` pixels dropped."""
    rows, cols = image_size
    boxes = det.boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, cols)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, rows)
    ok = (boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side)
    return Detections(boxes[ok], det.scores[ok], det.phrase_index[ok])


def per_class_nms(det: Detections, iou_threshold: float) -> Detections:
    """Greedy NMS within each phrase; kept detections sorted by score (stable)."""
    return det.take(nms_by_class(det.boxes, det.scores, det.phrase_index, iou_threshold))


def _empty(image_size: tuple[int, int], image: GeoImage | np.ndarray) -> MaskSet:
    transform, crs = _georef(image)
    return MaskSet(
        np.zeros((0, *image_size), dtype=bool),
        np.zeros(0, dtype=np.float32),
        np.zeros((0, 4)),
        {CLASS_COLUMN: np.zeros(0, dtype=object), PREDICTED_IOU: np.zeros(0, dtype=np.float32),
         DETECTOR_BOX: np.zeros((0, 4))},
        transform,
        crs,
    )


def _georef(image: GeoImage | np.ndarray):
    if isinstance(image, GeoImage):
        return image.transform, image.crs
    return None, None


class DetectorSam:
    """The detector + SAM concept backend (see the module docstring)."""

    def __init__(
        self,
        detector: OpenVocabularyDetector,
        backend: Backend,
        nms_iou: float = 0.5,
        batch_boxes: int = 16,
    ) -> None:
        if batch_boxes < 1:
            raise InputError(f"batch_boxes must be at least 1, got {batch_boxes}")
        if not 0.0 < nms_iou <= 1.0:
            raise InputError(f"nms_iou must be in (0, 1], got {nms_iou}")
        self.detector = detector
        self.backend = backend
        self.nms_iou = float(nms_iou)
        self.batch_boxes = int(batch_boxes)
        self.name = f"{detector.name}+{backend.name}"

    def find(self, image: GeoImage | np.ndarray, query: ConceptQuery) -> MaskSet:
        """Every instance of ``query``'s phrases in ``image`` (see the module docstring)."""
        if len(query.exemplar_boxes):
            raise PromptError(
                "the detector + SAM route finds by phrases only; for example boxes use SAM 3 (--model sam3) "
                "or find-similar"
            )
        rgb = as_rgb8(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        det = self.detector.detect(rgb, query.phrases)
        det = per_class_nms(clip_boxes(det, size), self.nms_iou)
        logger.debug("%s: %d boxes after NMS", self.detector.name, len(det))
        if not len(det):
            return _empty(size, image)
        masks, ious = self._masks(rgb, det.boxes)
        classes = np.array([query.class_of(query.phrases[i]) for i in det.phrase_index], dtype=object)
        found = MaskSet(
            masks,
            det.scores,
            extras={CLASS_COLUMN: classes, PREDICTED_IOU: ious, DETECTOR_BOX: det.boxes},
            transform=_georef(image)[0],
            crs=_georef(image)[1],
        )
        return found[found.areas > 0]

    def _masks(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mask per box: ``(K, H, W)`` bool and ``(K,)`` float32 predicted IoU."""
        embedding = self.backend.set_image(rgb)
        masks, ious = [], []
        for start in range(0, len(boxes), self.batch_boxes):
            chunk = boxes[start : start + self.batch_boxes]
            # "scene": the pixels of the image given to set_image, the frame every backend takes (classic included)
            result = self.backend.predict(embedding, Prompts(boxes=chunk, frame="scene"), multimask=False)
            if len(result) != len(chunk):
                raise ModelError(
                    f"backend {self.backend.name} returned {len(result)} masks for {len(chunk)} boxes; "
                    "it must give one mask per box"
                )
            masks.append(result.masks)
            ious.append(result.scores)
        return np.concatenate(masks), np.concatenate(ious).astype(np.float32)
