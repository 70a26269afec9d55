"""Open-vocabulary detectors on tiny random-weight snapshots of the real ``transformers``
classes: our post-processing equals the library's ``post_process_*`` output (boxes,
scores, labels), and each box maps back to the exact phrase given."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.tiny_concept import write_grounding_dino, write_owlv2
from terramask.core.errors import ModelError, PromptError
from terramask.models.concept.detectors import (
    GROUNDING_DINO_BOX_THRESHOLD,
    GROUNDING_DINO_TEXT_THRESHOLD,
    OWLV2_BOX_THRESHOLD,
    Detections,
    GroundingDinoDetector,
    Owlv2Detector,
    cxcywh_to_pixels,
    grounding_dino_detections,
    phrase_token_spans,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gdino(tmp_path_factory) -> GroundingDinoDetector:
    return GroundingDinoDetector.from_pretrained(write_grounding_dino(tmp_path_factory.mktemp("gdino")))


@pytest.fixture(scope="module")
def owl(tmp_path_factory) -> Owlv2Detector:
    return Owlv2Detector.from_pretrained(write_owlv2(tmp_path_factory.mktemp("owlv2")))


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A 50x70 (rows x cols) image: non-square, so width and height scaling both matter."""
    return (np.random.default_rng(3).random((50, 70, 3)) * 255).astype(np.uint8)


def test_documented_default_thresholds(gdino, owl):
    assert (GROUNDING_DINO_BOX_THRESHOLD, GROUNDING_DINO_TEXT_THRESHOLD, OWLV2_BOX_THRESHOLD) == (0.35, 0.25, 0.1)
    assert (gdino.box_threshold, gdino.text_threshold, owl.box_threshold) == (0.35, 0.25, 0.1)


@pytest.mark.slow
def test_grounding_dino_boxes_and_scores_equal_the_library(gdino, rgb):
    inputs = gdino.processor(images=rgb, text="building.", return_tensors="pt")
    with torch.inference_mode():
        out = gdino.model(**inputs)
    every = gdino.processor.post_process_grounded_object_detection(
        out, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[rgb.shape[:2]]
    )[0]
    threshold = float(np.median(every["scores"].numpy()))  # keeps about half of the queries
    lib = gdino.processor.post_process_grounded_object_detection(
        out, inputs["input_ids"], threshold=threshold, text_threshold=0.0, target_sizes=[rgb.shape[:2]]
    )[0]
    gdino.box_threshold, gdino.text_threshold = threshold, 0.0
    try:
        ours = gdino.detect(rgb, ("building",))
    finally:
        gdino.box_threshold, gdino.text_threshold = GROUNDING_DINO_BOX_THRESHOLD, GROUNDING_DINO_TEXT_THRESHOLD
    assert 0 < len(ours) < len(every["scores"])
    np.testing.assert_allclose(ours.boxes, lib["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.scores, lib["scores"].numpy(), atol=1e-6)
    assert all(label.startswith("building") for label in lib["text_labels"]) and set(ours.phrase_index) == {0}


def test_grounding_dino_labels_map_back_to_the_exact_phrases(gdino):
    """Designed logits: each query's tokens above the text threshold spell (part of) one
    phrase; the library decodes them to lower-case token text, we give the phrase as typed."""
    phrases = ("Building", "solar panel")
    text = ". ".join(phrases) + "."
    ids = gdino.processor.tokenizer(text, return_tensors="pt")["input_ids"]
    assert gdino.processor.tokenizer.convert_ids_to_tokens(ids[0].tolist()) == [
        "[CLS]", "building", ".", "solar", "panel", ".", "[SEP]"
    ]
    logits = torch.full((1, 5, 32), -8.0)
    logits[:, :, 7:] = float("-inf")  # beyond the text: masked, as the model does
    logits[0, 0, 1] = 2.0  # building
    logits[0, 1, 3], logits[0, 1, 4] = 1.0, 3.0  # solar panel
    logits[0, 2, 3] = 1.5  # "solar" alone: still the phrase "solar panel"
    logits[0, 3, 4] = -1.0  # below the box threshold (0.27 < 0.35)
    logits[0, 4, 1], logits[0, 4, 3] = 0.5, 2.5  # both phrases: the stronger wins
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.2, 0.3, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2],
                           [0.5, 0.5, 0.5, 0.5], [0.4, 0.4, 0.2, 0.2]]])
    out = type("Out", (), {"logits": logits, "pred_boxes": boxes})()
    lib = gdino.processor.post_process_grounded_object_detection(
        out, ids, threshold=0.35, text_threshold=0.25, target_sizes=[(50, 70)]
    )[0]
    encoded = gdino.processor.tokenizer(text, return_offsets_mapping=True)
    spans = phrase_token_spans([tuple(o) for o in encoded["offset_mapping"]], text, phrases)
    ours = grounding_dino_detections(logits[0].numpy(), boxes[0].numpy(), spans, (50, 70), 0.35, 0.25)
    np.testing.assert_allclose(ours.boxes, lib["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.scores, lib["scores"].numpy(), atol=1e-6)
    assert lib["text_labels"] == ["building", "solar panel", "solar", "building solar"]
    assert [phrases[i] for i in ours.phrase_index] == ["Building", "solar panel", "solar panel", "solar panel"]


def test_phrase_token_spans_follow_character_offsets():
    text = "building. solar panel."
    offsets = [(0, 0), (0, 8), (8, 9), (10, 15), (16, 21), (21, 22), (0, 0)]
    spans = phrase_token_spans(offsets, text, ("building", "solar panel"))
    assert [s.tolist() for s in spans] == [[1], [3, 4]]
    with pytest.raises(PromptError, match="no tokens"):
        phrase_token_spans([(0, 0), (8, 9), (0, 0)], "building.", ("building",))


def test_owlv2_boxes_scores_and_labels_equal_the_library(owl, rgb):
    phrases = ("building", "solar panel", "pond")
    inputs = owl.processor(text=[list(phrases)], images=rgb, return_tensors="pt")
    with torch.inference_mode():
        out = owl.model(**inputs)
    every = owl.processor.post_process_grounded_object_detection(out, threshold=0.0, target_sizes=[rgb.shape[:2]])[0]
    threshold = float(np.median(every["scores"].numpy()))
    lib = owl.processor.post_process_grounded_object_detection(
        out, threshold=threshold, target_sizes=[rgb.shape[:2]], text_labels=[list(phrases)]
    )[0]
    owl.box_threshold = threshold
    try:
        ours = owl.detect(rgb, phrases)
    finally:
        owl.box_threshold = OWLV2_BOX_THRESHOLD
    assert 0 < len(ours) < len(every["scores"])
    np.testing.assert_allclose(ours.boxes, lib["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(ours.scores, lib["scores"].numpy(), atol=1e-6)
    assert ours.phrase_index.tolist() == lib["labels"].tolist()
    assert [phrases[i] for i in ours.phrase_index] == lib["text_labels"]


def test_detector_refuses_too_many_tokens(gdino, rgb):
    with pytest.raises(PromptError, match="Grounding DINO reads at most 32"):
        gdino.detect(rgb, tuple(["solar panel"] * 100))


def test_cxcywh_to_pixels():
    np.testing.assert_allclose(cxcywh_to_pixels(np.array([[0.5, 0.5, 0.2, 0.4]]), 70, 50), [[28, 15, 42, 35]])


def test_detections_columns_must_agree():
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))


def test_loading_a_folder_without_weights_is_one_model_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "grounding-dino"}')
    with pytest.raises(ModelError, match=f"cannot load the Grounding DINO model in {tmp_path}") as info:
        GroundingDinoDetector.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)
