"""CRS options and coordinate transforms (pyproj, always x/y order)."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.io.crs import (
    crs_equal,
    is_lonlat,
    normalize_crs,
    parse_crs_option,
    prompt_frame,
    transform_bounds,
    transform_xy,
)


@pytest.mark.parametrize("value", [None, "", "pixel", "PIXEL", "px", " pixels "])
def test_pixel_option(value):
    assert parse_crs_option(value) == ("pixel", None)


@pytest.mark.parametrize("value", ["lonlat", "LonLat", "EPSG:4326", "epsg:4326", "OGC:CRS84", "wgs84"])
def test_lonlat_option(value):
    assert parse_crs_option(value) == ("lonlat", "EPSG:4326")


@pytest.mark.parametrize("value", ["scene", "map", "Scene"])
def test_scene_option_is_the_scene_crs(value):
    assert parse_crs_option(value, scene_crs="EPSG:32618") == ("world", "EPSG:32618")
    assert parse_crs_option(value) == ("world", None)  # resolved against the scene later


@pytest.mark.parametrize(
    "value, expected",
    [
        ("EPSG:32633", "EPSG:32633"),
        ("epsg:32633", "EPSG:32633"),
        ("+proj=utm +zone=33 +datum=WGS84 +units=m +no_defs", "EPSG:32633"),
        ("EPSG:3857", "EPSG:3857"),
    ],
)
def test_epsg_option_is_normalized(value, expected):
    assert parse_crs_option(value) == ("world", expected)


def test_crs_without_epsg_code_comes_back_as_wkt():
    kind, crs = parse_crs_option("+proj=laea +lat_0=10 +lon_0=20 +datum=WGS84 +units=m")
    assert kind == "world"
    assert crs.startswith(("PROJCRS", "PROJCS")) and "Lambert" in crs


@pytest.mark.parametrize("value", ["foo", "EPSG:99999", "EPSG:abc", "utm33"])
def test_unknown_crs_is_an_input_error_naming_the_value(value):
    with pytest.raises(InputError) as info:
        parse_crs_option(value)
    message = str(info.value)
    assert repr(value) in message and "EPSG" in message and "\n" not in message


def test_prompt_frame_uses_prompts_frame_words():
    assert prompt_frame("pixel") == ("scene", None)
    assert prompt_frame("lonlat") == ("lonlat", "EPSG:4326")
    assert prompt_frame("EPSG:32618") == ("world", "EPSG:32618")
    assert prompt_frame("map", "EPSG:32631") == ("world", "EPSG:32631")


def test_normalize_and_compare():
    assert normalize_crs(32618) == "EPSG:32618"
    assert is_lonlat("OGC:CRS84") and is_lonlat("EPSG:4326") and not is_lonlat("EPSG:3857") and not is_lonlat(None)
    assert crs_equal("EPSG:32633", "+proj=utm +zone=33 +datum=WGS84 +units=m +no_defs")
    assert not crs_equal("EPSG:32633", "EPSG:32632")
    assert crs_equal(None, None) and not crs_equal(None, "EPSG:4326")
    with pytest.raises(InputError):
        normalize_crs(None)


def test_lonlat_to_utm_on_the_central_meridian():
    # UTM zone 33N: central meridian 15°E -> easting 500000; the equator -> northing 0;
    # 45°N on the central meridian is 0.9996 * meridian arc length = 4982950.40 m (WGS 84).
    out = transform_xy(np.array([[15.0, 0.0], [15.0, 45.0]]), "EPSG:4326", "EPSG:32633")
    assert out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out[0], [500000.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[1], [500000.0, 4982950.40], atol=0.01)


def test_x_is_always_longitude_and_round_trip():
    xy = np.array([[16.5, 48.2], [14.0, 50.1], [15.2, 47.0]])
    utm = transform_xy(xy, "EPSG:4326", "EPSG:32633")
    assert (utm[:, 0] > 300000).all() and (utm[:, 1] > 5_000_000).all()  # easting, northing
    back = transform_xy(utm, "EPSG:32633", "OGC:CRS84")
    np.testing.assert_allclose(back, xy, atol=1e-9)


def test_web_mercator_known_values():
    out = transform_xy(np.array([[180.0, 0.0]]), "EPSG:4326", "EPSG:3857")
    np.testing.assert_allclose(out, [[20037508.342789244, 0.0]], atol=1e-6)


def test_same_crs_is_a_copy():
    xy = np.array([[1.0, 2.0]])
    out = transform_xy(xy, "EPSG:32633", "epsg:32633")
    np.testing.assert_array_equal(out, xy)
    out[0, 0] = 5
    assert xy[0, 0] == 1.0


def test_empty_input():
    assert transform_xy(np.zeros((0, 2)), "EPSG:4326", "EPSG:32633").shape == (0, 2)


def test_untransformable_coordinate_is_named():
    with pytest.raises(InputError, match=r"\(15, 95\)"):
        transform_xy(np.array([[15.0, 10.0], [15.0, 95.0]]), "EPSG:4326", "EPSG:32633")


def test_unknown_crs_in_transform():
    with pytest.raises(InputError, match="unknown CRS"):
        transform_xy(np.array([[0.0, 0.0]]), "EPSG:4326", "bogus")


def test_transform_bounds_follows_the_edges():
    # a UTM square around the central meridian: its lon/lat bounds are wider at the
    # northern edge than the corner-only estimate would be south of it
    bounds = transform_bounds((400000.0, 5000000.0, 600000.0, 5200000.0), "EPSG:32633", "EPSG:4326")
    corners = transform_xy(
        np.array([[400000, 5000000], [600000, 5000000], [400000, 5200000], [600000, 5200000]], dtype=float),
        "EPSG:32633",
        "EPSG:4326",
    )
    assert bounds[0] <= corners[:, 0].min() and bounds[2] >= corners[:, 0].max()
    assert bounds[1] <= corners[:, 1].min() + 1e-9 and bounds[3] > corners[:, 1].max()  # the top edge bulges north
    assert 13 < bounds[0] < 14 and 16 < bounds[2] < 17


# -- CRS pairs without a transformation (issue 16) -------------------------------------------
MARS = "IAU_2015:49900"  # Mars (2015) geographic: PROJ refuses to move coordinates to Earth


def test_transform_between_planets_is_an_input_error_naming_both_crs():
    mars = normalize_crs(MARS)
    with pytest.raises(InputError) as err:
        transform_xy(np.array([[10.0, 5.0]]), mars, "EPSG:32633")
    message = str(err.value)
    assert "Mars (2015)" in message and "EPSG:32633" in message and "celestial body" in message
    assert "\n" not in message and "PROJ_IGNORE" not in message
    with pytest.raises(InputError, match=r"from EPSG:4326 to Mars \(2015\)"):
        transform_bounds((0.0, 0.0, 1.0, 1.0), "EPSG:4326", mars)


def test_predict_cli_with_prompts_in_a_mars_crs_is_one_line(tmp_path, capsys):
    from helpers.scenes import blob_scene, write_geotiff
    from terramask.cli.main import main

    scene = write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)
    out = tmp_path / "out"
    code = main(["predict", str(scene), "--point", "10,20", "--crs", MARS, "--model", "classic", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("terramask: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "Mars (2015)" in lines[0] and "EPSG:32633" in lines[0]
    assert not out.exists() or not any(out.iterdir())
