"""SAM 3 through ``transformers`` on a tiny random-weight ``Sam3Model`` snapshot: instances
with class, scores and presence, equal to the library's own post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.tiny_concept import write_sam3
from terramask.core.errors import InputError
from terramask.models.concept.base import CLASS_COLUMN, ConceptBackend, ConceptQuery
from terramask.models.concept.sam3 import (
    PRESENCE_COLUMN,
    SAM3_THRESHOLD,
    Sam3ConceptBackend,
    concept_prompts,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def sam3(tmp_path_factory) -> Sam3ConceptBackend:
    return Sam3ConceptBackend.from_pretrained(write_sam3(tmp_path_factory.mktemp("sam3")), threshold=0.0)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return (np.random.default_rng(5).random((40, 60, 3)) * 255).astype(np.uint8)


def _library(sam3, rgb, text, boxes=None, labels=None):
    kwargs = {} if boxes is None else {"input_boxes": [boxes], "input_boxes_labels": [labels]}
    inputs = sam3.processor(images=rgb, text=text, return_tensors="pt", **kwargs)
    inputs.pop("original_sizes")
    with torch.inference_mode():
        out = sam3.model(**inputs)
    result = sam3.processor.post_process_instance_segmentation(
        out, threshold=sam3.threshold, mask_threshold=sam3.mask_threshold, target_sizes=[rgb.shape[:2]]
    )[0]
    return result, torch.sigmoid(out.presence_logits).item()


@pytest.mark.slow
def test_instances_columns_and_values_equal_the_library(sam3, rgb):
    assert isinstance(sam3, ConceptBackend)
    found = sam3.find(rgb, ConceptQuery(phrases=("building", "solar panel"), classes={"solar panel": "pv"}))
    parts = [_library(sam3, rgb, text) for text in ("building", "solar panel")]
    masks = np.concatenate([r["masks"].numpy().astype(bool) for r, _ in parts])
    keep = masks.reshape(len(masks), -1).any(axis=1)
    assert found.shape == (40, 60) and len(found) == keep.sum() > 0
    np.testing.assert_array_equal(found.masks, masks[keep])
    scores = np.concatenate([r["scores"].numpy() for r, _ in parts])[keep]
    np.testing.assert_allclose(found.scores, scores, atol=1e-6)
    np.testing.assert_allclose(found["predicted_iou"], scores, atol=1e-6)
    counts = [len(r["scores"]) for r, _ in parts]
    classes = np.array(["building"] * counts[0] + ["pv"] * counts[1], dtype=object)[keep]
    assert found[CLASS_COLUMN].tolist() == classes.tolist()
    presence = np.repeat([p for _, p in parts], counts)[keep]
    np.testing.assert_allclose(found[PRESENCE_COLUMN], presence, atol=1e-6)
    assert found.masks.dtype == bool and found[PRESENCE_COLUMN].dtype == np.float32


def test_exemplar_boxes_refine_a_single_phrase(sam3, rgb):
    boxes, labels = [[5.0, 5.0, 20.0, 25.0], [30.0, 10.0, 50.0, 30.0]], [1, 0]
    found = sam3.find(rgb, ConceptQuery(phrases=("roof",), exemplar_boxes=boxes, exemplar_labels=labels))
    lib, _ = _library(sam3, rgb, "roof", boxes, labels)
    plain, _ = _library(sam3, rgb, "roof")
    assert not np.allclose(lib["scores"].numpy(), plain["scores"].numpy())  # the exemplars reached the model
    keep = lib["masks"].numpy().reshape(len(lib["masks"]), -1).any(axis=1)
    np.testing.assert_allclose(found.scores, lib["scores"].numpy()[keep], atol=1e-6)
    assert set(found[CLASS_COLUMN].tolist()) <= {"roof"}


def test_threshold_filters_instances(sam3, rgb):
    every = sam3.find(rgb, ConceptQuery(phrases=("pond",)))
    cut = float(np.median(every.scores))
    strict = Sam3ConceptBackend(sam3.model, sam3.processor, threshold=cut).find(rgb, ConceptQuery(phrases=("pond",)))
    assert len(strict) < len(every) and np.all(strict.scores > cut)
    assert SAM3_THRESHOLD == 0.5


def test_concept_prompts_routes_exemplars():
    ex = {"exemplar_boxes": [[0, 0, 4, 4]], "exemplar_labels": [1]}
    single = concept_prompts(ConceptQuery(phrases=("car",), **ex))
    assert [(t, c, len(b)) for t, c, b, _ in single] == [("car", "car", 1)]
    several = concept_prompts(ConceptQuery(phrases=("car", "tree"), exemplar_class="thing", **ex))
    assert [(t, c, len(b)) for t, c, b, _ in several] == [("car", "car", 0), ("tree", "tree", 0), (None, "thing", 1)]
    alone = concept_prompts(ConceptQuery(**ex))
    assert [(t, c, len(b)) for t, c, b, _ in alone] == [(None, "object", 1)]
    with pytest.raises(InputError, match="at least one example"):
        concept_prompts(ConceptQuery(exemplar_boxes=[[0, 0, 4, 4]], exemplar_labels=[0]))


def test_exemplars_alone_use_the_visual_prompt(sam3, rgb):
    found = sam3.find(rgb, ConceptQuery(exemplar_boxes=[[10, 10, 30, 30]], exemplar_labels=[1], exemplar_class="house"))
    lib, _ = _library(sam3, rgb, "visual", [[10.0, 10.0, 30.0, 30.0]], [1])
    keep = lib["masks"].numpy().reshape(len(lib["masks"]), -1).any(axis=1)
    np.testing.assert_allclose(found.scores, lib["scores"].numpy()[keep], atol=1e-6)
    assert set(found[CLASS_COLUMN].tolist()) == {"house"}


def test_concept_prompts_give_each_exemplar_to_the_phrase_of_its_class():
    """Per-box classes: a box refines the phrase of its class; counter-examples without a
    class refine every phrase; an example of a class no phrase names is a visual prompt;
    a class with only counter-examples here is left out (its examples are in other tiles)."""
    boxes = [[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 3, 3], [2, 2, 6, 6], [3, 3, 8, 8]]
    query = ConceptQuery(phrases=("car", "tree"), exemplar_boxes=boxes, exemplar_labels=[1, 1, 0, 0, 0],
                         exemplar_classes=("tree", "pool", "object", "car", "shed"))
    got = [(t, c, b.tolist(), lab.tolist()) for t, c, b, lab in concept_prompts(query)]
    assert got == [
        ("car", "car", [[1, 1, 3, 3], [2, 2, 6, 6]], [0, 0]),
        ("tree", "tree", [[0, 0, 4, 4], [1, 1, 3, 3]], [1, 0]),
        (None, "pool", [[5, 5, 9, 9]], [1]),
    ]
    with pytest.raises(InputError, match="3 exemplar boxes but 1 exemplar classes"):
        ConceptQuery(phrases=("car",), exemplar_boxes=boxes[:3], exemplar_labels=[1, 1, 0], exemplar_classes=("a",))
