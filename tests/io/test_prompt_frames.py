"""Prompt conversion lonlat/world -> scene pixels -> tile pixels, with bounds and nodata checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine

from terramask.core.errors import PromptError
from terramask.core.geometry import Window
from terramask.core.prompts import Prompts
from terramask.io.crs import transform_xy
from terramask.io.prompt_frames import to_scene_pixels, to_tile_pixels
from terramask.io.scene import open_scene

UTM = "EPSG:32633"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels, upper-left corner at (500000, 5000000)
SHAPE = (30, 40)  # rows, cols


def scene_px(prompts, valid_mask=None, crs=UTM, transform=T, shape=SHAPE):
    return to_scene_pixels(prompts, crs, transform, shape, valid_mask=valid_mask, source="test.tif")


# -- scene frame -------------------------------------------------------------------------------


def test_scene_frame_points_pass_through():
    p = Prompts(points=[[0, 0], [39.9, 29.9], [10.5, 3.25]], labels=[1, 0, 1], text="field")
    out = scene_px(p)
    assert out.frame == "scene" and out.crs is None
    np.testing.assert_array_equal(out.points, p.points)
    assert out.labels.tolist() == [1, 0, 1] and out.text == "field"


@pytest.mark.parametrize("xy", [(40, 5), (5, 30), (-0.1, 5), (5, -3)])
def test_scene_frame_point_outside(xy):
    with pytest.raises(PromptError) as info:
        scene_px(Prompts(points=[xy], labels=[1]))
    message = str(info.value)
    assert f"({xy[0]:.8g}, {xy[1]:.8g})" in message
    assert "outside test.tif" in message and "x 0..40, y 0..30" in message


def test_prior_mask_logits_are_kept():
    logits = np.ones((1, 256, 256), dtype=np.float32)
    out = scene_px(Prompts(points=[[1, 1]], labels=[1], mask_logits=logits))
    assert out.mask_logits is not None and out.mask_logits.shape == (1, 256, 256)


# -- world and lonlat frames ----------------------------------------------------------------------


def test_world_points_in_scene_crs():
    # world (500125, 4999845) is 12.5 px right, 15.5 px down of the upper-left corner
    p = Prompts(points=[[500125, 4999845]], labels=[1], frame="world", crs=UTM)
    np.testing.assert_allclose(scene_px(p).points, [[12.5, 15.5]])


def test_world_prompts_without_crs_use_the_scene_crs():
    p = Prompts(points=[[500125, 4999845]], labels=[1], frame="world", crs=None)
    np.testing.assert_allclose(scene_px(p).points, [[12.5, 15.5]])


def test_world_points_in_another_crs():
    # express the centre of pixel (12, 15) in web mercator; it must come back to (12.5, 15.5)
    mercator = transform_xy(np.array([[500125.0, 4999845.0]]), UTM, "EPSG:3857")
    p = Prompts(points=mercator, labels=[1], frame="world", crs="EPSG:3857")
    np.testing.assert_allclose(scene_px(p).points, [[12.5, 15.5]], atol=1e-6)


def test_world_or_lonlat_prompts_on_a_scene_without_crs():
    for p in (
        Prompts(points=[[15, 45]], labels=[1], frame="lonlat", crs="EPSG:4326"),
        Prompts(points=[[1, 2]], labels=[1], frame="world", crs=UTM),
    ):
        with pytest.raises(PromptError, match="test.tif has no CRS"):
            to_scene_pixels(p, None, Affine.identity(), SHAPE, source="test.tif")


@pytest.mark.parametrize("frame", ["tile", "model"])
def test_tile_and_model_frames_cannot_be_placed(frame):
    with pytest.raises(PromptError, match=frame):
        scene_px(Prompts(points=[[1, 1]], labels=[1], frame=frame))


def test_lonlat_point_outside_reports_lonlat_and_scene_bounds():
    with pytest.raises(PromptError) as info:
        scene_px(Prompts(points=[[16.0, 45.0]], labels=[1], frame="lonlat", crs="EPSG:4326"))
    message = str(info.value)
    assert "(16, 45) in lon/lat" in message and "outside test.tif" in message
    # the scene starts on the 15°E central meridian at about 45.1°N: bounds are given in lon/lat
    lon, lat = transform_xy(np.array([[500000.0, 5000000.0]]), UTM, "EPSG:4326")[0]
    assert f"{lon:.8g}" in message and f"{lat:.8g}" in message
    assert "in lon/lat" in message and "(40x30 px)" in message


def test_untransformable_lonlat_is_a_prompt_error():
    with pytest.raises(PromptError, match="cannot be transformed"):
        scene_px(Prompts(points=[[15.0, 95.0]], labels=[1], frame="lonlat", crs="EPSG:4326"))


def test_lonlat_prompts_on_rgb_byte_land_on_the_expected_pixel(rs_data):
    path = rs_data / "geotiffs" / "RGB.byte.tif"
    lonlat = [(-77.75, 24.6), (-78.1, 24.05), (-77.0, 25.2)]
    with rasterio.open(path) as ds:
        # independent expectation: GDAL/OGR transform and rasterio's own pixel index
        xs, ys = rasterio.warp.transform("EPSG:4326", ds.crs, [p[0] for p in lonlat], [p[1] for p in lonlat])
        expected = [ds.index(x, y) for x, y in zip(xs, ys)]  # (row, col)
    with open_scene(path) as scene:
        p = Prompts(points=lonlat, labels=[1, 1, 0], frame="lonlat", crs="EPSG:4326")
        out = to_scene_pixels(p, scene.crs, scene.transform, scene.shape, valid_mask=scene.valid_mask, source=scene.path)
    got = [(math.floor(y), math.floor(x)) for x, y in out.points]
    assert got == [tuple(int(v) for v in e) for e in expected]
    assert got[0] == (344, 398)


def test_lonlat_point_on_nodata_of_rgb_byte(rs_data):
    path = rs_data / "geotiffs" / "RGB.byte.tif"
    with open_scene(path) as scene:
        # the centre of pixel (3, 3): a nodata corner of the rotated footprint
        world = np.array([scene.transform @ (3.5, 3.5)])
        lonlat = transform_xy(world, scene.crs, "EPSG:4326")
        p = Prompts(points=lonlat, labels=[1], frame="lonlat", crs="EPSG:4326")
        with pytest.raises(PromptError, match=r"lies on nodata .* \(pixel column 3, row 3\)") as info:
            to_scene_pixels(p, scene.crs, scene.transform, scene.shape, valid_mask=scene.valid_mask, source=scene.path)
    assert f"{lonlat[0, 0]:.8g}" in str(info.value) and str(path) in str(info.value)


# -- nodata --------------------------------------------------------------------------------------


def test_point_on_nodata_rejected_with_array_mask():
    valid = np.ones(SHAPE, dtype=bool)
    valid[10:20, 10:20] = False
    with pytest.raises(PromptError, match=r"background point \(15\.5, 12\) in scene pixels lies on nodata"):
        scene_px(Prompts(points=[[1, 1], [15.5, 12.0]], labels=[1, 0]), valid_mask=valid)
    out = scene_px(Prompts(points=[[9.99, 9.99], [20.0, 20.0]], labels=[1, 1]), valid_mask=valid)
    assert len(out.points) == 2


def test_point_on_nodata_rejected_with_scene_valid_mask(rgb_u8):
    # rgb_u8 has nodata in the top-left 4 rows x 5 cols
    with open_scene(rgb_u8.path) as scene:
        calls = []

        def valid_mask(window):
            calls.append(window)
            return scene.valid_mask(window)

        with pytest.raises(PromptError, match="nodata"):
            to_scene_pixels(
                Prompts(points=[[4.5, 3.5]], labels=[1]), scene.crs, scene.transform, scene.shape, valid_mask=valid_mask
            )
        assert calls == [Window(4, 3, 1, 1)]  # reads only the pixel under the point
        out = to_scene_pixels(
            Prompts(points=[[5.0, 3.5]], labels=[1]), scene.crs, scene.transform, scene.shape, valid_mask=scene.valid_mask
        )
        np.testing.assert_array_equal(out.points, [[5.0, 3.5]])


def test_valid_mask_of_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        scene_px(Prompts(points=[[1, 1]], labels=[1]), valid_mask=np.ones((3, 3), dtype=bool))


# -- boxes ---------------------------------------------------------------------------------------


def test_world_box_becomes_pixel_box():
    box = [500050, 4999800, 500150, 4999950]  # xmin, ymin, xmax, ymax (y up)
    out = scene_px(Prompts(boxes=[box], frame="world", crs=UTM))
    np.testing.assert_allclose(out.boxes, [[5, 5, 15, 20]])


def test_lonlat_box_covers_the_reprojected_outline():
    corners_px = np.array([[5.0, 5.0], [15.0, 20.0]])
    corners_lonlat = transform_xy(np.array([T @ tuple(c) for c in corners_px]), UTM, "EPSG:4326")
    box = [*corners_lonlat.min(axis=0), *corners_lonlat.max(axis=0)]
    out = scene_px(Prompts(boxes=[box], frame="lonlat", crs="EPSG:4326"))
    x0, y0, x1, y1 = out.boxes[0]
    # UTM grid and meridians are not parallel: the lon/lat box maps to a slightly larger pixel box
    assert x0 <= 5.0 + 1e-6 and y0 <= 5.0 + 1e-6 and x1 >= 15.0 - 1e-6 and y1 >= 20.0 - 1e-6
    assert x0 > 4.0 and y0 > 4.0 and x1 < 16.0 and y1 < 21.0


def test_box_partly_outside_is_clipped(caplog):
    out = scene_px(Prompts(boxes=[[-5, 10, 20, 45]]))
    np.testing.assert_allclose(out.boxes, [[0, 10, 20, 30]])
    assert "clipped" in caplog.text


@pytest.mark.parametrize("box", [[40, 0, 50, 10], [-10, -10, 0, 5], [5, 31, 10, 40]])
def test_box_fully_outside_is_an_error(box):
    with pytest.raises(PromptError, match="is outside test.tif"):
        scene_px(Prompts(boxes=[box]))


def test_box_on_nodata_only_is_an_error():
    valid = np.ones(SHAPE, dtype=bool)
    valid[:, :20] = False
    with pytest.raises(PromptError, match="covers only nodata"):
        scene_px(Prompts(boxes=[[2, 2, 19.5, 10]]), valid_mask=valid)
    out = scene_px(Prompts(boxes=[[2, 2, 20.5, 10]]), valid_mask=valid)  # touches column 20
    np.testing.assert_allclose(out.boxes, [[2, 2, 20.5, 10]])


def test_box_nodata_check_through_callable():
    def valid_mask(window):
        return np.zeros(window.shape, dtype=bool)

    with pytest.raises(PromptError, match="covers only nodata"):
        scene_px(Prompts(boxes=[[1, 1, 5, 5]]), valid_mask=valid_mask)


# -- tiles ---------------------------------------------------------------------------------------


def test_to_tile_pixels_subtracts_the_window_offset():
    p = Prompts(points=[[110.5, 220.0], [150, 300]], labels=[1, 0], boxes=[[100, 200, 180, 260]])
    out = to_tile_pixels(p, Window(100, 200, 256, 256))
    assert out.frame == "tile"
    np.testing.assert_allclose(out.points, [[10.5, 20.0], [50, 100]])
    np.testing.assert_allclose(out.boxes, [[0, 0, 80, 60]])
    assert out.labels.tolist() == [1, 0]


def test_to_tile_pixels_outside_error_and_drop():
    p = Prompts(points=[[10, 10], [300, 10]], labels=[1, 0])
    window = Window(0, 0, 256, 256)
    with pytest.raises(PromptError, match=r"\(300, 10\).*outside tile"):
        to_tile_pixels(p, window)
    out = to_tile_pixels(p, window, outside="drop")
    np.testing.assert_allclose(out.points, [[10, 10]])
    assert out.labels.tolist() == [1]


def test_to_tile_pixels_boxes_clipped_or_dropped():
    p = Prompts(boxes=[[200, 200, 300, 300], [500, 500, 600, 600]])
    window = Window(0, 0, 256, 256)
    with pytest.raises(PromptError, match="does not overlap tile"):
        to_tile_pixels(p, window)
    out = to_tile_pixels(p, window, outside="drop")
    np.testing.assert_allclose(out.boxes, [[200, 200, 256, 256]])


def test_to_tile_pixels_needs_scene_frame():
    with pytest.raises(PromptError, match="scene pixels"):
        to_tile_pixels(Prompts(points=[[15, 45]], labels=[1], frame="lonlat"), Window(0, 0, 10, 10))
    with pytest.raises(ValueError, match="outside"):
        to_tile_pixels(Prompts(points=[[1, 1]], labels=[1]), Window(0, 0, 10, 10), outside="keep")


def test_scene_to_tile_round_trip_through_world():
    """A world point converted to scene pixels then to a tile lands on the same ground spot."""
    world = np.array([[500255.0, 4999785.0]])
    scene = scene_px(Prompts(points=world, labels=[1], frame="world", crs=UTM))
    window = Window(20, 15, 10, 10)
    tile = to_tile_pixels(scene, window)
    tile_transform = T @ Affine.translation(window.col_off, window.row_off)
    np.testing.assert_allclose(np.array([tile_transform @ tuple(tile.points[0])]), world)


def test_world_points_in_a_crs_without_transformation_to_the_scene_name_both():
    """A Mars CRS cannot be placed on an Earth scene: a PromptError (an InputError)
    naming both CRSs, never PROJ's own exception."""
    from terramask.io.crs import normalize_crs

    mars = normalize_crs("IAU_2015:49900")
    prompts = Prompts(points=[[10.0, 5.0]], labels=[1], boxes=[[1.0, 1.0, 2.0, 2.0]], frame="world", crs=mars)
    with pytest.raises(PromptError) as err:
        to_scene_pixels(prompts, "EPSG:32633", Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0), (256, 320))
    assert "Mars (2015)" in str(err.value) and "EPSG:32633" in str(err.value)
