"""Detector + SAM on deterministic fakes: box -> mask batching, phrase -> class mapping,
per-class NMS, clipping, empty results and refused inputs."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.base import Embedding
from terramask.models.concept.base import CLASS_COLUMN, ConceptBackend, ConceptQuery
from terramask.models.concept.detector_sam import DETECTOR_BOX, PREDICTED_IOU, DetectorSam, per_class_nms
from terramask.models.concept.detectors import Detections


class FixedDetector:
    """Returns fixed boxes and records the phrases it was asked for."""

    name = "fixed-detector"

    def __init__(self, boxes, scores, phrase_index) -> None:
        self.detections = Detections(boxes, scores, phrase_index)
        self.asked: list[tuple[str, ...]] = []

    def detect(self, rgb, phrases):
        self.asked.append(tuple(phrases))
        return self.detections


class BoxesBackend:
    """One filled-box mask per box (predicted IoU = 0.5 + box index / 100 within the call),
    every call recorded."""

    name = "boxes"

    def __init__(self, drop_last: bool = False) -> None:
        self.calls: list[dict] = []
        self.images = 0
        self.drop_last = drop_last

    def set_image(self, image):
        self.images += 1
        image = np.asarray(image)
        return Embedding(model=self.name, features=None, image_size=image.shape[:2], input_size=image.shape[:2])

    def predict(self, embedding, prompts, multimask=True):
        self.calls.append({"boxes": prompts.boxes.copy(), "multimask": multimask, "frame": prompts.frame})
        boxes = prompts.boxes[:-1] if self.drop_last else prompts.boxes
        masks = np.zeros((len(boxes), *embedding.image_size), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        return MaskSet(masks, 0.5 + np.arange(len(boxes), dtype=np.float32) / 100)


RGB = np.zeros((40, 60, 3), dtype=np.uint8)


def _boxes(n: int) -> np.ndarray:
    """``n`` disjoint 4x4 boxes along the top rows."""
    return np.array([[6 * i, 2, 6 * i + 4, 6] for i in range(n)], dtype=float)


def test_one_mask_per_box_decoded_in_batches_in_score_order():
    scores = np.array([0.4, 0.9, 0.6, 0.8, 0.5])
    detector = FixedDetector(_boxes(5), scores, [0, 1, 0, 1, 0])
    backend = BoxesBackend()
    found = DetectorSam(detector, backend, batch_boxes=2).find(RGB, ConceptQuery(phrases=("building", "solar panel")))
    assert isinstance(DetectorSam(detector, backend), ConceptBackend)
    assert backend.images == 1
    assert [len(c["boxes"]) for c in backend.calls] == [2, 2, 1]
    assert all(c["multimask"] is False and c["frame"] == "scene" for c in backend.calls)
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_array_equal(np.concatenate([c["boxes"] for c in backend.calls]), _boxes(5)[order])
    np.testing.assert_allclose(found.scores, scores[order].astype(np.float32))
    assert found[CLASS_COLUMN].tolist() == ["solar panel", "solar panel", "building", "building", "building"]
    np.testing.assert_allclose(found[PREDICTED_IOU], [0.5, 0.51, 0.5, 0.51, 0.5])
    np.testing.assert_array_equal(found[DETECTOR_BOX], _boxes(5)[order])
    for mask, box in zip(found.masks, found[DETECTOR_BOX], strict=True):
        x0, y0, x1, y1 = box.astype(int)
        assert mask.sum() == (x1 - x0) * (y1 - y0) and mask[y0:y1, x0:x1].all()
    # the MaskSet boxes are the masks' (core.boxes.mask_to_box: last pixel inclusive)
    np.testing.assert_array_equal(found.boxes, found[DETECTOR_BOX] - [0, 0, 1, 1])


def test_classes_follow_the_query_mapping_and_phrases_reach_the_detector():
    detector = FixedDetector(_boxes(2), [0.9, 0.8], [1, 0])
    query = ConceptQuery(phrases=("  solar   panel ", "pond"), classes={"pond": "water"})
    found = DetectorSam(detector, BoxesBackend()).find(RGB, query)
    assert detector.asked == [("solar panel", "pond")]
    assert found[CLASS_COLUMN].tolist() == ["water", "solar panel"]


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 20, 40, 30]], dtype=float)
    det = Detections(boxes, [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 0])
    kept = per_class_nms(det, 0.5)
    np.testing.assert_allclose(kept.scores, [0.9, 0.7, 0.6])  # the overlapping box of class 1 survives
    assert kept.phrase_index.tolist() == [0, 1, 0]


def test_boxes_are_clipped_to_the_image_and_slivers_dropped():
    boxes = np.array([[-5, -5, 10, 10], [55, 30, 80, 50], [20, 10, 20.5, 30]], dtype=float)
    backend = BoxesBackend()
    found = DetectorSam(FixedDetector(boxes, [0.9, 0.8, 0.7], [0, 0, 0]), backend).find(
        RGB, ConceptQuery(phrases=("roof",))
    )
    np.testing.assert_array_equal(backend.calls[0]["boxes"], [[0, 0, 10, 10], [55, 30, 60, 40]])
    assert len(found) == 2


def test_nothing_detected_skips_the_encoder_and_keeps_the_columns_and_georeference():
    backend = BoxesBackend()
    image = GeoImage(np.zeros((3, 40, 60), dtype=np.uint8), transform=Affine(2, 0, 100, 0, -2, 500), crs="EPSG:32633")
    found = DetectorSam(FixedDetector(np.zeros((0, 4)), [], []), backend).find(image, ConceptQuery(phrases=("car",)))
    assert backend.images == 0 and len(found) == 0
    assert found.shape == (40, 60) and found.crs == "EPSG:32633" and found.transform == image.transform
    assert set(found.extras) == {CLASS_COLUMN, PREDICTED_IOU, DETECTOR_BOX}


def test_results_on_a_geoimage_carry_its_georeference():
    image = GeoImage(np.zeros((3, 40, 60), dtype=np.uint8), transform=Affine(2, 0, 100, 0, -2, 500), crs="EPSG:32633")
    found = DetectorSam(FixedDetector(_boxes(1), [0.9], [0]), BoxesBackend()).find(image, ConceptQuery(phrases=("car",)))
    assert len(found) == 1 and found.crs == "EPSG:32633" and found.transform == image.transform


def test_exemplars_are_refused_with_the_routes_that_take_them():
    query = ConceptQuery(phrases=("car",), exemplar_boxes=[[0, 0, 5, 5]], exemplar_labels=[1])
    with pytest.raises(PromptError, match="SAM 3.*find-similar"):
        DetectorSam(FixedDetector(_boxes(1), [0.9], [0]), BoxesBackend()).find(RGB, query)


def test_a_backend_that_loses_boxes_is_a_model_error():
    with pytest.raises(ModelError, match="returned 1 masks for 2 boxes"):
        DetectorSam(FixedDetector(_boxes(2), [0.9, 0.8], [0, 0]), BoxesBackend(drop_last=True)).find(
            RGB, ConceptQuery(phrases=("car",))
        )


@pytest.mark.parametrize(("kwargs", "message"), [({"batch_boxes": 0}, "batch_boxes"), ({"nms_iou": 0.0}, "nms_iou")])
def test_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        DetectorSam(FixedDetector(_boxes(1), [0.9], [0]), BoxesBackend(), **kwargs)
