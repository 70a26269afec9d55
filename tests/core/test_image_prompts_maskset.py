import numpy as np
import pytest
from affine import Affine

from terramask.core.errors import BandError, InputError, PromptError
from terramask.core.frames import pixel_area, pixel_to_world, world_to_pixel
from terramask.core.image import GeoImage, parse_bands
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.core.stretch import apply_stretch, compute_stretch


def test_parse_bands_is_one_based_and_repeats_single_band():
    assert parse_bands("4,3,2", 4) == (3, 2, 1)
    assert parse_bands("2", 4) == (1, 1, 1)
    assert parse_bands(None, 1) == (0, 0, 0)
    assert parse_bands(None, 8) == (0, 1, 2)
    with pytest.raises(BandError, match="band 5 does not exist"):
        parse_bands("5,3,2", 4, source="x.tif")
    with pytest.raises(BandError):
        parse_bands("a,b", 4)
    with pytest.raises(BandError):
        parse_bands("1,2", 4)


def test_stretch_ignores_nodata_and_maps_percentiles_to_0_255():
    px = np.arange(100, dtype=np.uint16).reshape(1, 10, 10) * 10
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False  # value 0 is nodata
    s = compute_stretch(px, valid, (0, 100))
    assert s.low == (10.0,) and s.high == (990.0,)
    out = apply_stretch(px, s, (0,))
    assert out[0, 0, 1] == 0 and out[0, 9, 9] == 255


def test_to_rgb8_uses_scene_stretch_and_blacks_out_nodata():
    px = np.full((3, 4, 4), 1000, np.uint16)
    px[:, 0, 0] = 0
    img = GeoImage(px, nodata=0)
    s = compute_stretch(np.array([[[500, 1500]]] * 3, np.uint16), None, (0, 100))
    rgb = img.to_rgb8(stretch=s)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all()
    assert (rgb[1, 1] == 128).all()
    assert not img.valid_mask[0, 0] and img.valid_mask[1, 1]


def test_uint8_passes_through_and_single_band_is_grey():
    px = np.random.default_rng(0).integers(0, 255, (1, 5, 6), dtype=np.uint8)
    rgb = GeoImage(px).to_rgb8()
    assert rgb.shape == (5, 6, 3)
    np.testing.assert_array_equal(rgb[:, :, 0], px[0])
    np.testing.assert_array_equal(rgb[:, :, 2], px[0])


def test_frames_round_trip():
    t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    world = pixel_to_world(t, [[10, 20]])
    np.testing.assert_allclose(world, [[1005, 1990]])
    np.testing.assert_allclose(world_to_pixel(t, world), [[10, 20]])
    assert pixel_area(t) == 0.25


def test_prompts_validation_and_refine_keeps_earlier_points():
    p = Prompts(points=[[1, 2]], labels=[1])
    r = p.refine([[5, 5]], [0], mask_logits=np.zeros((256, 256)))
    assert r.points.tolist() == [[1, 2], [5, 5]] and r.labels.tolist() == [1, 0]
    assert r.mask_logits.shape == (1, 256, 256)
    with pytest.raises(PromptError, match="degenerate"):
        Prompts(boxes=[[5, 5, 5, 9]])
    with pytest.raises(PromptError):
        Prompts(points=[[1, 2]], labels=[2])
    with pytest.raises(PromptError):
        Prompts(points=[[1, 2]], labels=[])
    with pytest.raises(PromptError):
        Prompts(points=[[1, 2]], labels=[1], boxes=[[0, 0, 1, 1], [2, 2, 3, 3]])
    assert Prompts().is_empty


def test_maskset_columns_indexing_and_concat():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, :2, :2] = True
    masks[1, :, :] = True
    ms = MaskSet(masks, scores=[0.2, 0.9, 0.5], extras={"stability_score": np.array([1.0, 0.5, 0.7])})
    assert len(ms) == 3 and ms.shape == (4, 5)
    assert ms.areas.tolist() == [4, 20, 0]
    best = ms.sorted_by_score()
    assert best.scores.tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert best["stability_score"].tolist() == [0.5, 0.7, 1.0]
    assert ms[0].boxes.tolist() == [[0, 0, 1, 1]]
    both = MaskSet.concat([ms, ms[1:]])
    assert len(both) == 5
    with pytest.raises(InputError):
        MaskSet(masks, scores=[1.0])
    with pytest.raises(KeyError):
        ms["nope"]
    with pytest.raises(ValueError):
        ms.masks[0, 0, 0] = False  # immutable
