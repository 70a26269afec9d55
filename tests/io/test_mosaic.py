"""Mosaics: scenes in two UTM zones on one grid in one CRS."""

from __future__ import annotations

import pytest

from helpers.mosaic_scenes import RES, write_two_zones
from terramask.core.errors import InputError
from terramask.io.mosaic import mosaic_vrt
from terramask.io.scene import open_scene


@pytest.fixture()
def two_zones(tmp_path):
    return write_two_zones(tmp_path)


def test_mosaic_grid_is_one_crs_covering_both(two_zones):
    west, east, _ = two_zones
    xml = mosaic_vrt([west, east])
    with open_scene(xml) as scene, open_scene(west) as w:
        assert scene.crs == "EPSG:32633" and scene.count == 3
        assert scene.transform.a == pytest.approx(RES, rel=0.01)
        assert scene.bounds[0] == pytest.approx(w.bounds[0]) and scene.bounds[2] > w.bounds[2] + 200
        assert scene.path.startswith("mosaic of 2 scenes") and "west_33.tif" in scene.path
        px = scene.read().pixels
    assert (px[0] > 3000).sum() > 1000  # the field, from both scenes


def test_mosaic_refuses_bad_input(two_zones, tmp_path):
    west, _, _ = two_zones
    with pytest.raises(InputError, match="at least two scenes"):
        mosaic_vrt([west])
    with pytest.raises(InputError, match="unknown mosaic resampling"):
        mosaic_vrt([west, west], resampling="lanczos9")
