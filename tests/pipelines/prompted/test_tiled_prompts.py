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
from terramask.pipelines.prompted.tiles import plan_prompt_windows, segment_across_tiles

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


def test_points_in_several_windows_give_one_polygon(runway):
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


# -- routing: ScenePrompter.segment and the files it leads to ---------------------------------

FAR = (4000, 4000)
SQUARES = ((300, 400, 500, 560), (3300, 3200, 3480, 3420))  # x0, y0, x1, y1: ~3000 px apart


@pytest.fixture()
def two_squares(tmp_path):
    px = np.full((3, *FAR), 40, dtype=np.uint8)
    for x0, y0, x1, y1 in SQUARES:
        px[:, y0:y1, x0:x1] = 220
    px[:, :, :8] = 0  # nodata strip
    return write_geotiff(tmp_path / "far.tif", px, nodata=0)


def _boxes_around(squares, pad=10):
    return [[x0 - pad, y0 - pad, x1 + pad, y1 + pad] for x0, y0, x1, y1 in squares]


def test_predict_refuses_prompts_wider_than_a_window_and_segment_routes_them(two_squares):
    with open_scene(two_squares) as scene:
        prompter = ScenePrompter(scene, RegionBackend())
        with pytest.raises(PromptError, match="segment"):
            prompter.predict(Prompts(boxes=_boxes_around(SQUARES)))
        result = prompter.segment(Prompts(boxes=_boxes_around(SQUARES)))
        near = prompter.segment(Prompts(points=[[400, 480]], labels=[1]))
    assert len(result.objects) == 2
    for obj, square in zip(result.objects, SQUARES):
        assert len(obj.parts) == 1 and obj.windows[0].width == 1024
        assert obj.geometry_px.equals(shapely.box(*square))
    assert near.window.width == 1024 and near.candidates.shape == (1024, 1024), "one window: a plain Prediction"


def test_far_apart_boxes_give_two_masks_at_the_right_places(two_squares, tmp_path):
    import json

    import pyogrio
    import rasterio

    from terramask.pipelines.prompted.tiled_outputs import write_tiled_prediction

    with open_scene(two_squares) as scene:
        result = ScenePrompter(scene, RegionBackend()).segment(Prompts(boxes=_boxes_around(SQUARES)))
        paths = write_tiled_prediction(result, scene, tmp_path / "out")
    assert sorted(paths) == sorted(["mask.tif", "candidates.tif", "mask.gpkg", "mask.geojson", "overlay.png",
                                    "logits.npy", "result.json"])
    expected = np.zeros(FAR, np.uint8)
    for x0, y0, x1, y1 in SQUARES:
        expected[y0:y1, x0:x1] = 1
    with rasterio.open(two_squares) as src, rasterio.open(paths["mask.tif"]) as m, \
            rasterio.open(paths["candidates.tif"]) as c:
        assert (m.width, m.height, m.crs, m.transform) == (src.width, src.height, src.crs, src.transform)
        mask = m.read(1)
        bands = c.read()
    first = result.objects[0].windows[0]
    assert first.col_off == 0, "the first window holds the nodata strip"
    expected[first.row_off : first.row_off + first.height, :8] = 255  # nodata, marked where it was read
    np.testing.assert_array_equal(mask, expected)
    expected[expected == 255] = 0
    assert c.count == 2
    np.testing.assert_array_equal((bands == 1).any(axis=0), expected == 1)
    assert bands[0][SQUARES[0][1], SQUARES[0][0]] == 1 and bands[0][SQUARES[1][1], SQUARES[1][0]] == 0
    meta, _, wkb, fields = pyogrio.raw.read(paths["mask.gpkg"])
    columns = dict(zip(meta["fields"], fields))
    assert meta["crs"] == "EPSG:32633" and columns["candidate"].tolist() == [1, 2]
    for geom, (x0, y0, x1, y1) in zip(shapely.from_wkb(wkb), SQUARES):
        t = UTM33_TRANSFORM
        assert geom.equals(shapely.box(*(t @ (x0, y1)), *(t @ (x1, y0))))
    assert columns["area_m2"].tolist() == pytest.approx([200 * 160 * 0.25, 180 * 220 * 0.25])
    doc = json.loads(paths["result.json"].read_text())
    assert doc["method"] == "tiled" and len(doc["windows"]) == 2 and len(doc["candidates"]) == 2
    assert doc["prompts"]["prior_mask"] is False and "has_prior_mask" not in doc["prompts"]
    assert np.load(paths["logits.npy"]).shape == (2, 256, 256)


def test_an_object_larger_than_a_window_is_returned_whole(runway, tmp_path):
    import rasterio

    from terramask.pipelines.prompted.tiled_outputs import write_tiled_prediction

    with open_scene(runway) as scene:
        prompter = ScenePrompter(scene, RegionBackend(), window_size=1024, full_scene_max=1024)
        result = prompter.segment(Prompts(boxes=[[90, 190, 2910, 410]]))
        paths = write_tiled_prediction(result, scene, tmp_path / "out")
    assert len(result.objects) == 1 and len(result.objects[0].parts) == 4
    assert not (tmp_path / "out" / "candidates.tif").exists(), "one object: no candidates raster"
    with rasterio.open(paths["mask.tif"]) as m:
        mask = m.read(1)
    x0, y0, x1, y1 = OBJECT
    assert mask.shape == SHAPE and mask.sum() == (x1 - x0) * (y1 - y0) and mask[y0:y1, x0:x1].all()


def test_prompts_needing_too_many_windows_are_refused_before_encoding(two_squares):
    backend = RegionBackend()
    with open_scene(two_squares) as scene:
        prompter = ScenePrompter(scene, backend, window_size=256)
        with pytest.raises(PromptError, match=r"need \d+ windows"):
            prompter.segment(Prompts(boxes=[[10, 10, 3990, 3990]]))
    assert backend.images == []
