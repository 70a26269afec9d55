"""Prompted segmentation of scene files: frames, embedding reuse, refinement, windows."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from helpers.scenes import blob_scene, write_geotiff
from terramask.core.errors import PromptError
from terramask.core.prompts import Prompts
from terramask.io.crs import transform_xy
from terramask.io.scene import open_scene
from terramask.models.sam.backend import SamBackend
from terramask.pipelines.prompted.predict import ScenePrompter


class CountingBackend:
    """Wraps a backend and counts encoder runs."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.encoded = []

    def set_image(self, image):
        self.encoded.append(np.asarray(image).shape)
        return self.inner.set_image(image)

    def predict(self, embedding, prompts, multimask=True):
        return self.inner.predict(embedding, prompts, multimask=multimask)


@pytest.fixture()
def sam(tiny_sam_checkpoint):
    return CountingBackend(SamBackend.from_checkpoint(tiny_sam_checkpoint))


def test_pixel_and_lonlat_prompts_give_the_same_masks_and_one_embedding(blob_tif, sam):
    with open_scene(blob_tif) as scene:
        prompter = ScenePrompter(scene, sam)
        by_pixel = prompter.predict(Prompts(points=[[140.5, 100.5]], labels=[1]))
        world = np.array([scene.transform @ (140.5, 100.5)])
        lonlat = transform_xy(world, scene.crs, "EPSG:4326")
        by_lonlat = prompter.predict(Prompts(points=lonlat, labels=[1], frame="lonlat", crs="EPSG:4326"))
        by_map = prompter.predict(Prompts(points=world, labels=[1], frame="world", crs=scene.crs))
    assert len(sam.encoded) == 1, "the embedding must be computed once per scene"
    assert len(by_pixel.candidates) == 3
    assert list(by_pixel.candidates.scores) == sorted(by_pixel.candidates.scores, reverse=True)
    np.testing.assert_allclose(by_lonlat.prompts.points, [[140.5, 100.5]], atol=1e-6)
    np.testing.assert_array_equal(by_lonlat.candidates.masks, by_pixel.candidates.masks)
    np.testing.assert_array_equal(by_map.candidates.masks, by_pixel.candidates.masks)
    assert by_pixel.candidates.crs == "EPSG:32633"
    assert by_pixel.candidates.transform == Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)


def test_pipeline_matches_official_predictor_on_the_stretched_image(blob_tif, tiny_sam_checkpoint):
    from helpers.tiny_sam import official_predictor

    with open_scene(blob_tif) as scene:
        prompter = ScenePrompter(scene, SamBackend.from_checkpoint(tiny_sam_checkpoint))
        ours = prompter.predict(Prompts(points=[[140, 100], [30, 20]], labels=[1, 0]))
        rgb8 = scene.read_rgb8()
    predictor = official_predictor(tiny_sam_checkpoint)
    predictor.set_image(rgb8)
    masks, scores, logits = predictor.predict(
        point_coords=np.array([[140, 100], [30, 20]], float), point_labels=np.array([1, 0]), multimask_output=True
    )
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(ours.candidates.scores, scores[order], rtol=1e-4, atol=1e-4)
    for k, j in enumerate(order):
        agree = (ours.candidates.masks[k] == masks[j]).mean()
        assert agree > 0.999
        np.testing.assert_allclose(ours.candidates["low_res_logits"][k], logits[j], atol=1e-2, rtol=1e-3)


def test_refine_keeps_earlier_points_and_passes_best_logits(blob_tif, sam):
    with open_scene(blob_tif) as scene:
        prompter = ScenePrompter(scene, sam)
        first = prompter.predict(Prompts(points=[[140, 100]], labels=[1]))
        second = prompter.refine(first, points=[[60, 200]], labels=[0])
    assert second.prompts.points.tolist() == [[140, 100], [60, 200]]
    assert second.prompts.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(second.prompts.mask_logits, first.best_logits)
    assert len(sam.encoded) == 1


def test_prompts_outside_scene_or_on_nodata_are_rejected(blob_tif, sam):
    with open_scene(blob_tif) as scene:
        prompter = ScenePrompter(scene, sam)
        with pytest.raises(PromptError, match="outside"):
            prompter.predict(Prompts(points=[[400, 10]], labels=[1]))
        with pytest.raises(PromptError, match="nodata"):
            prompter.predict(Prompts(points=[[5, 10]], labels=[1]))
    assert sam.encoded == [], "no encoder run for rejected prompts"


def test_large_scene_encodes_only_a_native_resolution_window(tmp_path, sam):
    px = np.tile(blob_scene(256, 320), (1, 12, 10))  # 3072 x 3200
    path = write_geotiff(tmp_path / "large.tif", px)
    with open_scene(path) as scene:
        prompter = ScenePrompter(scene, sam)
        pred = prompter.predict(Prompts(points=[[2700.0, 2900.0]], labels=[1]))
        again = prompter.predict(Prompts(points=[[2650.0, 2850.0]], labels=[1]))
    assert sam.encoded == [(1024, 1024, 3)]
    window = pred.window
    assert window.contains(2700, 2900) and window.width == window.height == 1024
    assert pred.candidates.shape == (1024, 1024)
    assert pred.candidates.transform == scene.transform @ Affine.translation(window.col_off, window.row_off)
    assert again.window == window


def test_window_embeddings_are_capped_least_recently_used_first(tmp_path, sam):
    px = np.tile(blob_scene(256, 320), (1, 12, 10))  # 3072 x 3200
    path = write_geotiff(tmp_path / "large.tif", px)
    with open_scene(path) as scene:
        prompter = ScenePrompter(scene, sam, max_sessions=2)
        a = prompter.predict(Prompts(points=[[300.0, 300.0]], labels=[1])).window
        b = prompter.predict(Prompts(points=[[2700.0, 2900.0]], labels=[1])).window
        prompter.predict(Prompts(points=[[310.0, 310.0]], labels=[1]))  # a used again
        prompter.predict(Prompts(points=[[300.0, 2900.0]], labels=[1]))  # evicts b
        assert list(prompter._sessions)[0] == a and b not in prompter._sessions
        prompter.predict(Prompts(points=[[2700.0, 2900.0]], labels=[1]))
    assert len(sam.encoded) == 4, "b was encoded again after eviction; a was reused"
