"""Prompts on an object larger than one tile: several native-resolution windows, one polygon."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from helpers.scenes import UTM33_TRANSFORM, write_geotiff
from terramask.core.errors import PromptError
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.io.scene import open_scene
from terramask.models.base import Embedding
from terramask.pipelines.prompted.predict import ScenePrompter
from terramask.pipelines.prompted.tiles import plan_prompt_windows, segment_across_tiles, write_merged_prediction

SHAPE = (600, 3000)
OBJECT = (100, 200, 2900, 400)  # x0, y0, x1, y1: a runway 2800 px long


class RegionBackend:
    """Fake interactive model: the bright pixels connected to an object click (inside a
    box: the bright pixels in the box), minus those connected to a background click."""

    name = "region"

    def __init__(self):
        self.images = []

    def set_image(self, image):
        image = np.asarray(image)
        self.images.append(image.shape)
        return Embedding(model=self.name, features=image, image_size=image.shape[:2], input_size=image.shape[:2])

    def predict(self, embedding, prompts, multimask=True):
        import cv2

        bright = embedding.features.mean(axis=2) > 128
        n, lab = cv2.connectedComponents(bright.astype(np.uint8), connectivity=4)
        mask = np.zeros(bright.shape, dtype=bool)
        for box in prompts.boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            inside = np.zeros_like(bright)
            inside[y0:y1, x0:x1] = True
            mask |= bright & inside
        for (x, y), label in zip(prompts.points, prompts.labels):
            region = (lab == lab[int(y), int(x)]) & bright
            mask = mask | region if label == 1 else mask & ~region
        masks = np.stack([mask, np.zeros_like(mask), mask]) if multimask else mask[None]
        scores = np.array([0.9, 0.1, 0.5] if multimask else [0.9], dtype=np.float32)
        logits = np.zeros((len(masks), 256, 256), dtype=np.float32)
        return MaskSet(masks, scores, extras={"low_res_logits": logits})


@pytest.fixture()
def runway(tmp_path):
    px = np.full((3, *SHAPE), 40, dtype=np.uint8)
    x0, y0, x1, y1 = OBJECT
    px[:, y0:y1, x0:x1] = 220
    return write_geotiff(tmp_path / "runway.tif", px)


def run(path, prompts, **kw):
    backend = RegionBackend()
    with open_scene(path) as scene:
        prompter = ScenePrompter(scene, backend, window_size=1024, full_scene_max=1024)
        return segment_across_tiles(prompter, prompts, **kw), backend


def test_points_in_several_windows_give_one_polygon(runway, tmp_path):
    xs = [200, 900, 1500, 2100, 2700]
    result, backend = run(runway, Prompts(points=[[x, 300] for x in xs], labels=[1] * len(xs)))
    assert len(result.parts) == 3
    assert all(w.width == 1024 for w in result.windows)  # native resolution windows, not the scene
    assert all(shape[1] <= 1024 for shape in backend.images)
    assert result.geometry_px.equals(shapely.box(*OBJECT))
    # world frame: 0.5 m pixels from (500000, 4000000)
    assert result.geometry.equals(shapely.affinity.affine_transform(
        shapely.box(*OBJECT), [0.5, 0, 0, -0.5, 500000.0, 4000000.0]))
    assert result.score == pytest.approx(0.9)
    feature = result.feature()
    assert feature.properties["area_m2"] == pytest.approx(2800 * 200 * 0.25)
    assert feature.properties["windows"] == 3
    ms = result.to_maskset()
    assert ms.masks[0].sum() == 2800 * 200 and ms.transform.a == UTM33_TRANSFORM.a
    paths = write_merged_prediction(result, tmp_path / "out")
    assert all(p.is_file() for p in paths.values())


def test_a_box_larger_than_a_window_is_cut_into_pieces(runway):
    result, _ = run(runway, Prompts(boxes=[[90, 190, 2910, 410]]))
    assert len(result.parts) == 4
    assert result.geometry_px.equals(shapely.box(*OBJECT))


def test_sparse_points_leave_gaps_between_windows(runway):
    result, _ = run(runway, Prompts(points=[[300, 300], [2600, 300]], labels=[1, 1]))
    assert result.geometry_px.geom_type == "MultiPolygon"  # the user has to click in between
    assert result.geometry_px.area < 2800 * 200


def test_prompts_in_one_window_are_one_prediction(runway):
    result, backend = run(runway, Prompts(points=[[500, 300], [700, 320]], labels=[1, 1]))
    assert len(result.parts) == 1 and len(backend.images) == 1
    win = result.windows[0]
    assert result.geometry_px.equals(shapely.box(*OBJECT).intersection(shapely.box(*win.bounds)))


def test_plan_prompt_windows_background_points_go_where_they_are():
    prompts = Prompts(points=[[200, 300], [2600, 300], [250, 350]], labels=[1, 1, 0])
    groups = plan_prompt_windows(prompts, SHAPE[1], SHAPE[0], 1024)
    assert len(groups) == 2
    assert groups[0].prompts.labels.tolist() == [1, 0] and groups[1].prompts.labels.tolist() == [1]
    for g in groups:
        x0, y0, x1, y1 = g.window.bounds
        assert np.all((g.prompts.points[:, 0] >= x0) & (g.prompts.points[:, 0] < x1))
    with pytest.raises(PromptError, match="background points alone"):
        plan_prompt_windows(Prompts(points=[[200, 300], [2600, 300]], labels=[0, 0]), SHAPE[1], SHAPE[0], 1024)
    with pytest.raises(PromptError, match="prior mask"):
        plan_prompt_windows(Prompts(points=[[200, 300], [2600, 300]], labels=[1, 1],
                                    mask_logits=np.zeros((1, 256, 256), np.float32)), SHAPE[1], SHAPE[0], 1024)
