"""Reading scenes: metadata, band selection, scene-wide stretch, windows, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from terramask.core.errors import BandError, InputError, SceneError, SceneNotFoundError
from terramask.core.geometry import Window
from terramask.core.stretch import Stretch
from terramask.io import scene as scene_mod
from terramask.io.scene import open_scene


def hand_stretch(band: np.ndarray, nodata=None, p=(2, 98)) -> tuple[float, float]:
    values = band.astype(np.float64).ravel()
    values = values[np.isfinite(values)]
    if nodata is not None:
        values = values[values != nodata]
    lo, hi = np.percentile(values, p)
    return float(lo), float(hi)


def hand_rgb8(pixels: np.ndarray, lows, highs) -> np.ndarray:
    out = []
    for band, lo, hi in zip(pixels, lows, highs):
        scaled = (band.astype(np.float64) - lo) * 255.0 / (hi - lo)
        out.append(np.clip(np.round(np.nan_to_num(scaled, nan=0.0)), 0, 255))
    return np.moveaxis(np.array(out), 0, 2).astype(np.int16)


# -- metadata -----------------------------------------------------------------------------


def test_metadata_of_multiband_uint16(ms_u16):
    with open_scene(ms_u16.path) as scene:
        assert (scene.width, scene.height, scene.count) == (40, 30, 4)
        assert scene.shape == (30, 40)
        assert scene.dtype == np.uint16
        assert scene.crs == "EPSG:32633"
        assert scene.transform == ms_u16.transform
        assert scene.nodata == 0
        assert scene.band_names == ("band 1", "band 2", "band 3", "band 4")
        assert scene.bands == (0, 1, 2)
        assert scene.bounds == (500000.0, 5000000.0 - 300, 500000.0 + 400, 5000000.0)
        assert scene.path == ms_u16.path


def test_context_manager_closes_dataset(ms_u16):
    with open_scene(ms_u16.path) as scene:
        assert not scene.closed
    assert scene.closed
    with pytest.raises(SceneError, match="closed"):
        scene.read()


def test_default_bands_single_band_repeated(pan_i16):
    with open_scene(pan_i16.path) as scene:
        assert scene.bands == (0, 0, 0)
        image = scene.read()
        assert image.pixels.shape == (1, 20, 30)
        rgb = image.to_rgb8()
        assert rgb.shape == (20, 30, 3)
        assert (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all()


def test_band_descriptions_become_band_names(tmp_path, ms_u16):
    path = tmp_path / "named.tif"
    with rasterio.open(ms_u16.path) as src:
        profile = src.profile
        data = src.read()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(["blue", "green", "red", "nir"], start=1):
            dst.set_band_description(i, name)
    with open_scene(path, bands="4,3,2") as scene:
        assert scene.band_names == ("blue", "green", "red", "nir")
        assert scene.read().band_names == ("nir", "red", "green")


# -- band selection --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["4,3,2", (4, 3, 2), [4, 3, 2], " 4, 3 ,2 "])
def test_false_colour_band_selection(ms_u16, spec):
    with open_scene(ms_u16.path, bands=spec) as scene:
        assert scene.bands == (3, 2, 1)
        image = scene.read(Window(5, 4, 10, 6))
        np.testing.assert_array_equal(image.pixels, ms_u16.pixels[[3, 2, 1], 4:10, 5:15])


def test_single_band_spec_repeats_that_band(ms_u16):
    with open_scene(ms_u16.path, bands="4") as scene:
        assert scene.bands == (3, 3, 3)
        image = scene.read()
        np.testing.assert_array_equal(image.pixels, ms_u16.pixels[[3]])
        lo, hi = hand_stretch(ms_u16.pixels[3], nodata=0)
        assert image.stretch.low == pytest.approx((lo,)) and image.stretch.high == pytest.approx((hi,))


def test_repeated_band_in_composite_reads_in_display_order(ms_u16):
    with open_scene(ms_u16.path, bands="1,1,2") as scene:
        image = scene.read()
        np.testing.assert_array_equal(image.pixels, ms_u16.pixels[[0, 0, 1]])
        rgb = image.to_rgb8()
        np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 1])
        assert not np.array_equal(rgb[:, :, 1], rgb[:, :, 2])


@pytest.mark.parametrize("spec, message", [("5", "band 5 does not exist"), ("0,1,2", "band 0"), ("a,b,c", "integers"), ("1,2", "1 or 3")])
def test_bad_band_spec_names_the_file(ms_u16, spec, message):
    with pytest.raises(BandError, match=message) as info:
        open_scene(ms_u16.path, bands=spec)
    assert ms_u16.path in str(info.value)


# -- stretch ---------------------------------------------------------------------------------


def test_stretch_ignores_nodata_and_matches_hand_computation(ms_u16):
    with open_scene(ms_u16.path) as scene:
        stretch = scene.stretch
    assert len(stretch.low) == 4  # every scene band, indexed by scene band
    for b in range(4):
        lo, hi = hand_stretch(ms_u16.pixels[b], nodata=0)
        assert stretch.low[b] == pytest.approx(lo)
        assert stretch.high[b] == pytest.approx(hi)
    # counting the nodata rows would drag the low percentile to 0
    assert min(stretch.low) > 0


def test_custom_percentiles(ms_u16):
    with open_scene(ms_u16.path, percentiles=(10, 90)) as scene:
        lo, hi = hand_stretch(ms_u16.pixels[0], nodata=0, p=(10, 90))
        assert scene.stretch.low[0] == pytest.approx(lo) and scene.stretch.high[0] == pytest.approx(hi)
        assert scene.stretch.percentiles == (10.0, 90.0)


@pytest.mark.parametrize("bad", [(98, 2), (-1, 50), (5, 101)])
def test_bad_percentiles_are_input_errors(ms_u16, bad):
    with pytest.raises(InputError, match="percentiles"):
        open_scene(ms_u16.path, percentiles=bad)


def test_stretch_is_none_for_uint8(rgb_u8):
    with open_scene(rgb_u8.path) as scene:
        assert scene.stretch is None
        assert scene.read().stretch is None


def test_float_stretch_ignores_nan_and_valid_mask_marks_it(float_nan):
    with open_scene(float_nan.path) as scene:
        for b in range(3):
            lo, hi = hand_stretch(float_nan.pixels[b])
            assert scene.stretch.low[b] == pytest.approx(lo, rel=1e-6)
            assert scene.stretch.high[b] == pytest.approx(hi, rel=1e-6)
        valid = scene.valid_mask()
        np.testing.assert_array_equal(valid, ~np.isnan(float_nan.pixels[0]))
        rgb = scene.read_rgb8()
        assert (rgb[6:12, 6:12] == 0).all()


def test_int16_with_negative_values_and_nodata(pan_i16):
    with open_scene(pan_i16.path) as scene:
        assert scene.dtype == np.int16 and scene.nodata == -9999
        lo, hi = hand_stretch(pan_i16.pixels[0], nodata=-9999)
        assert scene.stretch.low == pytest.approx((lo,)) and scene.stretch.high == pytest.approx((hi,))
        assert lo < 0
        valid = scene.valid_mask()
        assert not valid[:, :3].any() and valid[:, 3:].all()


def test_read_rgb8_applies_scene_stretch_and_blackens_nodata(ms_u16):
    with open_scene(ms_u16.path, bands="4,3,2") as scene:
        window = Window(0, 20, 40, 10)  # rows 20..30 include the nodata rows 25..
        rgb = scene.read_rgb8(window)
    lows, highs = zip(*(hand_stretch(ms_u16.pixels[b], nodata=0) for b in (3, 2, 1)))
    expected = hand_rgb8(ms_u16.pixels[[3, 2, 1], 20:30, :], lows, highs)
    expected[5:] = 0
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 40, 3)
    assert np.abs(rgb.astype(np.int16) - expected).max() <= 1
    assert (rgb[5:] == 0).all()
    assert rgb[:5].max() == 255 and rgb[:5].min() == 0  # clipped at the percentiles


def test_tiles_share_the_scene_stretch(ms_u16):
    """Two windows with different content use the same scene-wide statistics."""
    with open_scene(ms_u16.path) as scene:
        a = scene.read(Window(0, 0, 10, 10))
        b = scene.read(Window(30, 10, 10, 10))
        assert a.stretch == b.stretch
        assert a.stretch.low == scene.stretch.low[:3]


def test_uint8_passes_through_with_nodata_black(rgb_u8):
    with open_scene(rgb_u8.path) as scene:
        rgb = scene.read_rgb8()
        np.testing.assert_array_equal(rgb, np.moveaxis(rgb_u8.pixels, 0, 2))
        valid = scene.valid_mask()
        assert not valid[:4, :5].any() and valid[4:, :].all() and valid[:, 5:].all()


def test_internal_mask_band_marks_invalid_pixels_and_is_left_out_of_stats(masked_u16):
    with open_scene(masked_u16.path) as scene:
        assert scene.nodata is None
        valid = scene.valid_mask()
        assert valid[:, :24].all() and not valid[:, 24:].any()
        np.testing.assert_array_equal(scene.valid_mask(Window(20, 2, 8, 3)), valid[2:5, 20:28])
        for b in range(2):
            lo, hi = hand_stretch(masked_u16.pixels[b, :, :24])
            assert scene.stretch.low[b] == pytest.approx(lo) and scene.stretch.high[b] == pytest.approx(hi)
        assert (scene.read_rgb8()[:, 24:] == 0).all()


def test_large_scene_stats_come_from_a_decimated_read(wide_u16, monkeypatch):
    """The long side is 4096 > 2048: statistics use a 2048-px read, never the full band."""
    shapes = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    with open_scene(wide_u16.path) as scene:
        assert scene.stats_shape() == (4, 2048)
        stretch = scene.stretch
    assert shapes and all(max(s[-2:]) <= 2048 for s in shapes)
    # every value col // 2 seen once in each of the 4 decimated rows
    lo, hi = np.percentile(np.tile(np.arange(2048), 4), [2, 98])
    assert stretch.low[0] == pytest.approx(lo) and stretch.high[0] == pytest.approx(hi)


def test_stats_with_overviews(tmp_path, wide_u16):
    path = tmp_path / "with_overviews.tif"
    with rasterio.open(wide_u16.path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], rasterio.enums.Resampling.nearest)
    with open_scene(path) as scene:
        assert scene.has_overviews
        lo, hi = np.percentile(np.tile(np.arange(2048), 4), [2, 98])
        assert scene.stretch.low[0] == pytest.approx(lo, abs=1) and scene.stretch.high[0] == pytest.approx(hi, abs=1)


def test_given_stretch_is_used_without_recomputing(ms_u16, monkeypatch):
    given = Stretch((0.0, 0.0, 0.0, 0.0), (1000.0, 2000.0, 3000.0, 4000.0))
    monkeypatch.setattr(scene_mod.Scene, "compute_stretch", lambda self, *a, **k: pytest.fail("recomputed"))
    with open_scene(ms_u16.path, stretch=given, bands="4,3,2") as scene:
        assert scene.stretch is given
        image = scene.read(Window(0, 0, 4, 4))
        assert image.stretch.low == (0.0, 0.0, 0.0) and image.stretch.high == (4000.0, 3000.0, 2000.0)


def test_given_stretch_must_cover_every_band(ms_u16):
    with pytest.raises(InputError, match="4"):
        open_scene(ms_u16.path, stretch=Stretch((0.0,), (1.0,)))


# -- windows ---------------------------------------------------------------------------------


def test_window_read_has_window_transform_and_pixels(ms_u16):
    window = Window(col_off=7, row_off=3, width=12, height=9)
    with open_scene(ms_u16.path) as scene:
        image = scene.read(window)
    np.testing.assert_array_equal(image.pixels, ms_u16.pixels[:3, 3:12, 7:19])
    assert image.window == window
    assert image.crs == "EPSG:32633" and image.nodata == 0
    # pixel (0, 0) of the window is scene pixel (7, 3): 500000 + 7*10, 5000000 - 3*10
    assert image.transform @ (0, 0) == pytest.approx((500070.0, 4999970.0))
    assert image.transform == ms_u16.transform @ Affine.translation(7, 3)


def test_whole_scene_read(rgb_u8):
    with open_scene(rgb_u8.path) as scene:
        image = scene.read()
    np.testing.assert_array_equal(image.pixels, rgb_u8.pixels)
    assert image.window == Window(0, 0, 20, 16)
    assert image.transform == rgb_u8.transform


@pytest.mark.parametrize(
    "window", [Window(-1, 0, 5, 5), Window(0, 0, 41, 5), Window(35, 25, 10, 10), Window(0, 0, 0, 5), Window(50, 50, 2, 2)]
)
def test_window_outside_the_scene_is_an_input_error(ms_u16, window):
    with open_scene(ms_u16.path) as scene:
        with pytest.raises(InputError) as info:
            scene.read(window)
        with pytest.raises(InputError):
            scene.valid_mask(window)
    assert ms_u16.path in str(info.value)


def test_resampled_read_scales_the_transform(ms_u16):
    with open_scene(ms_u16.path) as scene:
        image = scene.read(Window(0, 0, 40, 30), out_shape=(15, 20))
    assert image.pixels.shape == (3, 15, 20)
    assert image.transform.a == pytest.approx(20.0) and image.transform.e == pytest.approx(-20.0)
    np.testing.assert_array_equal(image.pixels, ms_u16.pixels[:3, 1::2, 1::2])  # nearest samples each output pixel centre


def test_valid_mask_without_nodata_is_all_true(wide_u16):
    with open_scene(wide_u16.path) as scene:
        mask = scene.valid_mask(Window(10, 1, 5, 3))
    assert mask.shape == (3, 5) and mask.dtype == bool and mask.all()


# -- plain images ------------------------------------------------------------------------------


def test_png_without_georeference(png_rgb):
    with warnings.catch_warnings():
        warnings.simplefilter("error", rasterio.errors.NotGeoreferencedWarning)  # must not escape
        with open_scene(png_rgb.path) as scene:
            assert scene.crs is None
            assert scene.transform == Affine.identity()
            assert scene.dtype == np.uint8 and scene.count == 3
            rgb = scene.read_rgb8()
            image = scene.read(Window(2, 3, 4, 5))
    np.testing.assert_array_equal(rgb, np.moveaxis(png_rgb.pixels, 0, 2))
    assert image.transform == Affine.translation(2, 3)
    assert image.crs is None


def test_jpeg_without_georeference(jpeg_rgb):
    with warnings.catch_warnings():
        warnings.simplefilter("error", rasterio.errors.NotGeoreferencedWarning)
        with open_scene(jpeg_rgb.path) as scene:
            assert scene.crs is None and scene.transform == Affine.identity()
            assert (scene.width, scene.height) == (32, 24)
            rgb = scene.read_rgb8()
    diff = np.abs(rgb.astype(np.int16) - np.moveaxis(jpeg_rgb.pixels, 0, 2).astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 4


# -- errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(SceneNotFoundError) as info:
        open_scene(path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in str(info.value)


def test_directory_is_a_scene_error(tmp_path):
    with pytest.raises(SceneError, match="directory") as info:
        open_scene(tmp_path)
    assert not isinstance(info.value, SceneNotFoundError)
    assert str(tmp_path) in str(info.value)


def test_text_file_named_tif(text_tif):
    with pytest.raises(SceneError) as info:
        open_scene(text_tif)
    message = str(info.value)
    assert text_tif in message and "not recognized" in message
    assert "\n" not in message


def test_truncated_tiff_fails_with_gdal_reason(truncated_tif):
    with pytest.raises(SceneError) as info:
        with open_scene(truncated_tif) as scene:
            scene.read()
    message = str(info.value)
    assert truncated_tif in message and "\n" not in message
    assert "TIFF" in message or "Read" in message  # GDAL's own reason, not a generic one


def test_truncated_tiff_fails_when_computing_stats(truncated_tif):
    with open_scene(truncated_tif) as scene:
        with pytest.raises(SceneError, match="statistics"):
            _ = scene.stretch


# -- real files ---------------------------------------------------------------------------------


def test_real_rgb_byte(rs_data):
    path = rs_data / "geotiffs" / "RGB.byte.tif"
    with rasterio.open(path) as ds:
        data, transform = ds.read(), ds.transform
    with open_scene(path) as scene:
        assert scene.crs == "EPSG:32618"
        assert scene.transform == transform
        assert scene.nodata == 0 and scene.stretch is None
        valid = scene.valid_mask()
        window = Window(300, 200, 64, 48)
        rgb = scene.read_rgb8(window)
    np.testing.assert_array_equal(valid, (data != 0).any(axis=0))
    assert 0.5 < valid.mean() < 0.8  # the rotated footprint leaves nodata corners
    np.testing.assert_array_equal(rgb, np.moveaxis(data[:, 200:248, 300:364], 0, 2))


def test_real_sentinel2_false_colour(rs_data):
    path = rs_data / "geotiffs" / "ftw_sentinel2_8band_inference-img.tif"
    with rasterio.open(path) as ds:
        data = ds.read()
    with open_scene(path, bands="4,3,2") as scene:
        assert scene.count == 8 and scene.dtype == np.uint16 and scene.crs == "EPSG:32633"
        rgb = scene.read_rgb8()
        stretch = scene.stretch
    for b in range(8):
        lo, hi = hand_stretch(data[b])
        assert stretch.low[b] == pytest.approx(lo) and stretch.high[b] == pytest.approx(hi)
    expected = hand_rgb8(data[[3, 2, 1]], [stretch.low[b] for b in (3, 2, 1)], [stretch.high[b] for b in (3, 2, 1)])
    assert np.abs(rgb.astype(np.int16) - expected).max() <= 1


def test_real_float64_multispectral(rs_data):
    path = rs_data / "geotiffs" / "solaris_ms1.tif"
    with rasterio.open(path) as ds:
        data = ds.read()
    with open_scene(path) as scene:
        assert scene.dtype == np.float64 and scene.count == 4
        for b in range(4):
            lo, hi = hand_stretch(data[b])
            assert scene.stretch.low[b] == pytest.approx(lo) and scene.stretch.high[b] == pytest.approx(hi)
        assert scene.read_rgb8().shape == (300, 300, 3)
