"""Files of a single-window prediction: scene grid without scene-sized arrays, several boxes, exports."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window as RioWindow

from helpers.scenes import UTM33_TRANSFORM
from terramask.core.geometry import Window
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.io.scene import open_scene
from terramask.pipelines.prompted.outputs import write_prediction
from terramask.pipelines.prompted.session import Prediction

SIDE = 20_000
WINDOW = Window(9_000, 11_000, 1024, 1024)


def _sparse_scene(path, side=SIDE):
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=UTM33_TRANSFORM, tiled=True, compress="deflate", SPARSE_OK="TRUE")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, 1024, 1024), 90, np.uint8), window=RioWindow(*WINDOW.bounds[:2], 1024, 1024))
    return path


def _prediction(masks, scores, prompts, window=WINDOW):
    t = UTM33_TRANSFORM @ Affine.translation(window.col_off, window.row_off)
    logits = np.zeros((len(masks), 256, 256), np.float32)
    candidates = MaskSet(masks, np.asarray(scores, np.float32), extras={"low_res_logits": logits}, transform=t,
                         crs="EPSG:32633")
    return Prediction(candidates, prompts, "fake", window)


def _squares(n, shape=(1024, 1024)):
    masks = np.zeros((n, *shape), bool)
    for k in range(n):
        masks[k, 100 * k + 50 : 100 * k + 120, 200:300] = True
    return masks


def test_browser_export_on_a_20000_px_scene_allocates_no_scene_sized_array(tmp_path):
    """One export of a 1024 px window prediction on a 20,000 x 20,000 scene (400 MB per mask band)."""
    from terramask.web.export import export_candidate

    scene_path = _sparse_scene(tmp_path / "scene.tif")
    prediction = _prediction(_squares(3), [0.9, 0.8, 0.7], Prompts(points=[[250, 80]], labels=[1]))
    with open_scene(scene_path) as scene:
        rgb8 = scene.read_rgb8(WINDOW)
        tracemalloc.start()
        try:
            folder, paths = export_candidate(prediction, 1, scene, rgb8, tmp_path / "exports", "roof")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 64 * 2**20, f"numpy/Python peak {peak / 2**20:.0f} MB"
    with rasterio.open(paths["mask.tif"]) as m:
        assert (m.width, m.height, m.transform, m.nodata) == (SIDE, SIDE, UTM33_TRANSFORM, 255)
        got = m.read(1, window=RioWindow(WINDOW.col_off, WINDOW.row_off, 1024, 1024))
        assert not m.read(1, window=RioWindow(0, 0, 256, 256)).any()
    np.testing.assert_array_equal(got == 1, _squares(3)[1], err_msg="the chosen candidate, at its window")
    assert json.loads(paths["result.json"].read_text())["method"] == "window"


def test_several_boxes_in_one_window_write_their_union(tmp_path):
    scene_path = _sparse_scene(tmp_path / "scene.tif")
    boxes = [[190, 40, 310, 130], [190, 140, 310, 230]]
    prediction = _prediction(_squares(2), [0.6, 0.9], Prompts(boxes=boxes))
    with open_scene(scene_path) as scene:
        paths = write_prediction(prediction, scene, tmp_path / "out", rgb8=scene.read_rgb8(WINDOW))
    with rasterio.open(paths["mask.tif"]) as m, rasterio.open(paths["candidates.tif"]) as c:
        win = RioWindow(WINDOW.col_off, WINDOW.row_off, 1024, 1024)
        np.testing.assert_array_equal(m.read(1, window=win) == 1, _squares(2).any(axis=0))
        assert c.count == 2 and c.read(2, window=win).sum() == 70 * 100
    doc = json.loads(paths["result.json"].read_text())
    assert doc["mask"] == "union of one mask per box"
    assert [c["box_xyxy_scene_px"][:2] for c in doc["candidates"]] == [[9200, 11050], [9200, 11150]]
