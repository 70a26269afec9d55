"""Find-similar (models/concept/similar.py): examples of one kind find the others and not
the second kind, on a deterministic colour-feature backend; the plumbing on a tiny
random-weight SAM (feature grid geometry, columns, per-class NMS)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.feature_backends import ColourFeatureBackend, colour_scene
from terramask.core.boxes import box_iou
from terramask.core.errors import ModelError, PromptError
from terramask.models.base import FeatureGrid, FeatureMap, grid_feature_map
from terramask.models.concept.base import CLASS_COLUMN, ConceptBackend, ConceptQuery
from terramask.models.concept.similar import (
    Exemplar,
    ExemplarImage,
    SimilarFinder,
    build_prototypes,
    local_peaks,
)

RED = [(16, 16, 56, 48), (120, 24, 168, 64), (40, 160, 88, 200), (180, 180, 232, 224)]
BLUE = [(96, 96, 144, 136), (192, 100, 240, 140), (16, 96, 56, 136)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _matches(found: np.ndarray, truth: list[np.ndarray], thresh: float = 0.8) -> list[bool]:
    return [any(_iou(f, t) >= thresh for f in found) for t in truth]


@pytest.fixture()
def scene():
    return colour_scene(256, RED, BLUE)


def test_examples_of_one_kind_find_the_others_and_not_the_second_kind(scene):
    img, red, blue = scene
    backend = ColourFeatureBackend()
    protos = build_prototypes(backend, [ExemplarImage(img, [Exemplar(mask=red[0], cls="roof")])])
    found = SimilarFinder(backend, protos).find(img)
    assert isinstance(SimilarFinder(backend, protos), ConceptBackend)
    assert all(_matches(found.masks, red)), "every red object is found from one red example"
    assert not any(_matches(found.masks, blue, 0.1)), "no blue object is found"
    assert len(found) == len(red)
    assert list(found[CLASS_COLUMN]) == ["roof"] * len(red)
    assert found.scores.min() >= 0.6 and found.scores.dtype == np.float32
    assert found["predicted_iou"].tolist() == pytest.approx([0.9] * len(red))
    assert found["point_coords"].shape == (len(red), 1, 2)


def test_two_classes_and_a_counter_example(scene):
    img, red, blue = scene
    backend = ColourFeatureBackend()
    exemplars = [Exemplar(mask=red[1], cls="roof"), Exemplar(mask=blue[0], cls="pool"),
                 Exemplar(label=0, point=(8.0, 248.0), cls="ground", where="counter")]
    protos = build_prototypes(backend, [ExemplarImage(img, exemplars)])
    assert protos.names == ("roof", "pool")
    assert protos.describe()["negative"] == 1 and protos.describe()["background"]
    found = SimilarFinder(backend, protos).find(img)
    classes = list(found[CLASS_COLUMN])
    roofs = found.masks[[c == "roof" for c in classes]]
    pools = found.masks[[c == "pool" for c in classes]]
    assert all(_matches(roofs, red)) and all(_matches(pools, blue))
    assert len(roofs) == len(red) and len(pools) == len(blue)


def test_point_exemplar_and_prototypes_from_several_images(scene):
    img, red, blue = scene
    img2, red2, _ = colour_scene(256, [(100, 100, 150, 150)], [], seed=1)
    backend = ColourFeatureBackend()
    protos = build_prototypes(backend, [
        ExemplarImage(img, [Exemplar(point=(30.0, 30.0))]),
        ExemplarImage(img2, [Exemplar(mask=red2[0])]),
    ])
    assert protos.positive.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(protos.vectors, axis=1), 1.0, atol=1e-5)
    found = SimilarFinder(backend, protos).find(img)
    assert all(_matches(found.masks, red)) and not any(_matches(found.masks, blue, 0.1))


def test_similarity_threshold_controls_what_is_kept(scene):
    img, red, _ = scene
    backend = ColourFeatureBackend()
    protos = build_prototypes(backend, [ExemplarImage(img, [Exemplar(mask=red[0])])], background=False)
    assert len(SimilarFinder(backend, protos, similarity=0.99999).find(img)) < len(red)
    everything = SimilarFinder(backend, protos, similarity=-1.0, max_points=200).find(img)
    assert len(everything) > len(red)  # without the background negative, grey and blue come too


def test_query_boxes_build_prototypes_in_the_image(scene):
    img, red, blue = scene
    backend = ColourFeatureBackend()
    x0, y0, x1, y1 = RED[2]
    query = ConceptQuery(exemplar_boxes=np.array([[x0, y0, x1, y1]]), exemplar_labels=np.array([1]),
                         exemplar_class="roof")
    found = SimilarFinder(backend).find(img, query)
    assert all(_matches(found.masks, red)) and set(found[CLASS_COLUMN]) == {"roof"}
    with pytest.raises(PromptError, match="not phrases"):
        SimilarFinder(backend).find(img, ConceptQuery(phrases=("building",)))
    with pytest.raises(PromptError, match="needs exemplars"):
        SimilarFinder(backend).find(img)


def test_bad_exemplars_are_one_clear_error(scene):
    img, red, _ = scene
    backend = ColourFeatureBackend()
    with pytest.raises(PromptError, match="counter-example"):
        build_prototypes(backend, [ExemplarImage(img, [Exemplar(label=0, mask=red[0])])])
    with pytest.raises(PromptError, match="exemplar 2 of ex.gpkg: covers no pixel"):
        build_prototypes(backend, [ExemplarImage(img, [Exemplar(mask=np.zeros((256, 256), bool),
                                                                  where="exemplar 2 of ex.gpkg")])])
    with pytest.raises(PromptError, match="a mask or a point"):
        Exemplar()


def test_backend_without_features_is_refused():
    from helpers.fake_backends import FixedGenerator

    with pytest.raises(ModelError, match="SAM-family"):
        SimilarFinder(FixedGenerator(np.zeros((1, 4, 4), bool)))


def test_peaks():
    score = np.array([[0.1, 0.9, 0.2], [0.3, 0.5, 0.8], [0.7, 0.1, 0.0]])  # 0.8 has 0.9 as a diagonal neighbour
    assert local_peaks(score).tolist() == [[False, True, False], [False, False, False], [True, False, False]]


def test_grid_feature_map_drops_padding_cells():
    feats = np.arange(2 * 64 * 64, dtype=np.float32).reshape(1, 2, 64, 64)
    grid = grid_feature_map(feats, (300, 400), (768, 1024), 1024, 256)
    assert isinstance(grid, FeatureGrid)
    assert grid.features.shape == (2, 48, 64)
    assert grid.cell == pytest.approx((16 * 300 / 768, 16 * 400 / 1024))
    assert grid.low_res_per_cell == 4


@pytest.mark.slow
def test_tiny_sam_plumbing(sam_backend, sam_test_image):
    """Random weights: no claim about quality, only that every family method fits together."""
    assert isinstance(sam_backend, FeatureMap)
    emb = sam_backend.set_image(sam_test_image)
    grid = sam_backend.feature_map(emb)
    assert grid.features.shape == (256, 48, 64) and grid.low_res_per_cell == 4
    mask = np.zeros((300, 400), bool)
    mask[110:190, 170:250] = True
    protos = build_prototypes(sam_backend, [ExemplarImage(sam_test_image, [Exemplar(mask=mask, cls="disc")])],
                              background=False)  # random features: no negative, so every peak is decoded
    found = SimilarFinder(sam_backend, protos, similarity=-1.0, max_points=16).find(sam_test_image)
    assert 1 <= len(found) <= 16
    assert found.shape == (300, 400) and found.masks.any(axis=(1, 2)).all()
    assert set(found[CLASS_COLUMN]) == {"disc"}
    iou = box_iou(found.boxes, found.boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.7  # per-class NMS
