"""STAC items as scenes: assets chosen by key or common band name become the bands of one
virtual scene read where the assets live (a loopback server), equal to the local bands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.remote_scenes import write_cog
from helpers.remote_server import RemoteServer
from terramask.core.errors import InputError, SceneError, SceneNotFoundError
from terramask.io.scene import open_scene
from terramask.io.stac import is_stac_item, scene_source

ROWS, COLS = 200, 240


def _item(assets: dict, item_id: str = "S2X_TEST_20240501") -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "test-collection",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [[[15, 37], [15.01, 37], [15.01, 37.01], [15, 37]]]},
        "bbox": [15, 37, 15.01, 37.01],
        "properties": {"datetime": "2024-05-01T10:20:30Z", "eo:cloud_cover": 3.5, "platform": "test-sat"},
        "links": [], "assets": assets,
    }


def _asset(href: str, common: str | None = None) -> dict:
    asset = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
    if common:
        asset["eo:bands"] = [{"name": common.upper(), "common_name": common}]
    return asset


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Bands B04/B03/B02 (10 m, uint16) and B8A (20 m) as COGs, an item with relative
    hrefs on a loopback server, and the local band pixels."""
    root = tmp_path_factory.mktemp("stac")
    rng = np.random.default_rng(5)
    bands = {key: rng.integers(100, 4000, (1, ROWS, COLS)).astype(np.uint16) for key in ("B04", "B03", "B02")}
    for key, px in bands.items():
        write_cog(root / f"{key}.tif", px, res=10.0, blocksize=128)
    nir = rng.integers(100, 4000, (1, ROWS // 2, COLS // 2)).astype(np.uint16)
    write_cog(root / "B8A.tif", nir, res=20.0, blocksize=128)
    assets = {"B04": _asset("./B04.tif", "red"), "B03": _asset("./B03.tif", "green"),
              "B02": _asset("./B02.tif", "blue"), "B8A": _asset("./B8A.tif", "nir08")}
    with RemoteServer(root) as server:
        item = _item(assets)
        item["links"] = [{"rel": "self", "href": server.url("item.json")}]
        (root / "item.json").write_text(json.dumps(item))
        yield server, root, bands, nir


def test_is_stac_item():
    assert is_stac_item("item.json") and is_stac_item("https://x.example/a/item.json?sig=1")
    assert is_stac_item("https://x.example/v1/collections/s2/items/S2B_1")
    assert not is_stac_item("scene.tif") and not is_stac_item("https://x.example/a.tif")


def test_item_by_common_names_equals_the_local_bands(catalogue):
    server, root, bands, _ = catalogue
    source = scene_source(server.url("item.json"), "red,green,blue")
    with open_scene(source) as scene:
        assert scene.shape == (ROWS, COLS) and scene.crs == "EPSG:32633" and scene.count == 3
        assert scene.path == f"{server.url('item.json')}#B04,B03,B02"
        assert scene.band_names == ("B04", "B03", "B02")
        assert scene.stac["id"] == "S2X_TEST_20240501" and scene.stac["datetime"].startswith("2024-05-01T10:20:30")
        assert scene.stac["properties"]["eo:cloud_cover"] == 3.5 and scene.stac["assets"] == ["B04", "B03", "B02"]
        np.testing.assert_array_equal(scene.read().pixels, np.concatenate([bands[k] for k in ("B04", "B03", "B02")]))
        with open_scene(root / "B04.tif") as local:
            assert scene.transform == local.transform


def test_coarser_asset_is_resampled_to_the_finest_grid(catalogue):
    server, _, bands, nir = catalogue
    with open_scene(scene_source(server.url("item.json"), "nir08,B04,B03")) as scene:
        px = scene.read().pixels
    assert scene.shape == (ROWS, COLS)
    np.testing.assert_array_equal(px[0], np.repeat(np.repeat(nir[0], 2, axis=0), 2, axis=1))  # nearest, 20 m -> 10 m
    np.testing.assert_array_equal(px[1], bands["B04"][0])


def test_local_item_file_with_default_assets(catalogue, tmp_path):
    server, _, bands, _ = catalogue
    item = _item({k: _asset(server.url(f"{k}.tif"), c) for k, c in (("B04", "red"), ("B03", "green"), ("B02", "blue"))})
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    with open_scene(path) as scene:  # no --assets: red,green,blue (no "visual" asset)
        assert scene.stac["assets"] == ["B04", "B03", "B02"]
        np.testing.assert_array_equal(scene.read().pixels[2], bands["B02"][0])


def test_missing_asset_is_one_clear_line(catalogue):
    server, _, _, _ = catalogue
    with pytest.raises(InputError, match=r"S2X_TEST_20240501 has no asset or band 'swir16'; its assets: B02, B03"):
        scene_source(server.url("item.json"), "red,swir16")


def test_missing_item_and_missing_asset_file(catalogue, tmp_path):
    server, _, _, _ = catalogue
    with pytest.raises(SceneNotFoundError, match=r"gone.json: not found on the server \(HTTP 404\)"):
        scene_source(server.url("gone.json?sig=SECRET"))
    item = _item({"red": _asset(server.url("nope.tif?sig=SECRET"))})
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    with pytest.raises(SceneError, match=r"asset red \(http://.*/nope.tif\): not found") as err:
        scene_source(path, "red")
    assert "SECRET" not in str(err.value)


def test_assets_need_a_stac_item(tmp_path):
    with pytest.raises(InputError, match="--assets chooses assets of a STAC item"):
        scene_source(tmp_path / "scene.tif", "red")
