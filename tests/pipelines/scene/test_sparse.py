"""Empty tiles are skipped without running the model, cheaply: a mostly empty
100,000 x 100,000 px sparse GeoTIFF (a few kilobytes on disk) is segmented in minutes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window as RioWindow

from helpers.blobs import BlobSegmenter
from helpers.scenes import UTM33_TRANSFORM
from terramask.core.geometry import Window
from terramask.io.scene import open_scene
from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.run import run_scene
from terramask.pipelines.scene.tiled import is_empty_tile


def write_sparse(path, size, patches, nodata=None, dtype="uint16"):
    """A tiled, DEFLATE, ``SPARSE_OK`` GeoTIFF of ``size`` x ``size`` px holding only
    ``patches`` ``(col, row, pixels (3, h, w))``; every other block is not stored."""
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs="EPSG:32633",
                       transform=UTM33_TRANSFORM, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       SPARSE_OK="TRUE", nodata=nodata) as dst:
        for col, row, px in patches:
            dst.write(px, window=RioWindow(col, row, px.shape[2], px.shape[1]))
    return path


def patch(seed=0):
    """A 300 x 400 field of ~1000 with a bright 100 x 200 object (+3000)."""
    rng = np.random.default_rng(seed)
    px = rng.integers(900, 1100, size=(3, 300, 400)).astype(np.uint16)
    px[:, 100:200, 100:300] += 3000
    return px


def test_empty_tile_rules():
    px = np.zeros((3, 8, 8), np.uint16)
    valid = np.ones((8, 8), bool)
    assert is_empty_tile(px, valid)             # constant (all zeros, no nodata value)
    px[1, 3, 3] = 5
    assert not is_empty_tile(px, valid)
    assert is_empty_tile(px, np.zeros((8, 8), bool))  # nodata only
    part = valid.copy()
    part[3, 3] = False
    assert is_empty_tile(px, part)              # constant where valid


def test_scene_knows_its_stored_blocks(tmp_path):
    path = write_sparse(tmp_path / "s.tif", 4096, [(1000, 2000, patch())])
    with open_scene(path) as scene:
        presence = scene.block_presence
        assert presence.shape == (16, 16) and presence.sum() == 6  # the patch spans 3 x 2 blocks
        assert scene.mostly_sparse
        assert scene.window_is_empty(Window(0, 0, 1024, 1024))
        assert not scene.window_is_empty(Window(900, 1900, 200, 200))
        # statistics from the stored blocks only: over the whole area (98 % never
        # written, read as 0) the 98th percentile would be 0
        assert scene.stretch.high[0] > 3500
        # a decimated read places the stored blocks where GDAL's nearest read would
        small = scene.read(out_shape=(512, 512)).pixels
        full = scene.read(out_shape=(512, 512))  # same path twice: deterministic
        assert np.array_equal(small, full.pixels)
        assert small[0, 250:275, 125:175].max() > 0 and small[0, :200].max() == 0


def test_sparse_scene_of_a_few_tiles_matches_a_dense_one(tmp_path):
    px = patch()
    sparse = write_sparse(tmp_path / "sparse.tif", 2048, [(700, 900, px)], nodata=0)
    dense = np.zeros((3, 2048, 2048), np.uint16)
    dense[:, 900:1200, 700:1100] = px
    with rasterio.open(tmp_path / "dense.tif", "w", driver="GTiff", width=2048, height=2048, count=3,
                       dtype="uint16", crs="EPSG:32633", transform=UTM33_TRANSFORM, nodata=0) as dst:
        dst.write(dense)
    config = SceneRunConfig(tile_size=512, overlap=64, progress=False)
    a = run_scene(sparse, tmp_path / "a", BlobSegmenter(), config)
    b = run_scene(tmp_path / "dense.tif", tmp_path / "b", BlobSegmenter(), config)
    assert a.objects == b.objects == 1 and a.skipped == b.skipped == a.tiles - 4
    with rasterio.open(a.paths["labels.tif"]) as x, rasterio.open(b.paths["labels.tif"]) as y:
        assert np.array_equal(x.read(1), y.read(1))


@pytest.mark.slow
def test_mostly_empty_100k_scene_in_minutes(tmp_path):
    size = 100_000
    path = write_sparse(tmp_path / "huge.tif", size, [(50_000, 50_000, patch()), (10_000, 80_000, patch(1))])
    assert path.stat().st_size < 5_000_000
    out = tmp_path / "out"
    result = run_scene(path, out, BlobSegmenter(), SceneRunConfig(progress=False))
    assert result.objects == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles"]["segmented"] <= 8 and summary["tiles"]["skipped_empty"] == result.tiles - summary["tiles"]["segmented"]
    assert summary["timings_s"]["total"] < 600
    with rasterio.open(out / "labels.tif") as ds:
        assert (ds.width, ds.height) == (size, size)
        labels = ds.read(1, window=RioWindow(50_000, 50_000, 400, 300))
    assert (labels[100:200, 100:300] > 0).all() and labels[:100].max() == 0
    recs = json.loads((out / "masks.json").read_text())
    assert len(recs) == 2 and {r["area"] for r in recs} == {20_000}
    assert recs[0]["segmentation"]["size"] == [size, size]


class NeverCalled:
    """A segmenter factory whose model must not run (and, with ``load=False``, not even load)."""

    def __init__(self, load: bool = True) -> None:
        self.load = load

    def __call__(self):
        assert self.load, "the model was loaded for a scene without data"

        def segment(image):
            raise AssertionError("the model ran on an empty tile")

        return segment


def test_empty_scenes_never_run_the_model(tmp_path):
    config = SceneRunConfig(tile_size=256, overlap=32, progress=False)
    empty = write_sparse(tmp_path / "empty.tif", 1000, [])
    result = run_scene(empty, tmp_path / "a", NeverCalled(load=False), config)
    assert result.objects == 0 and result.skipped == result.tiles == 25
    with rasterio.open(tmp_path / "constant.tif", "w", driver="GTiff", width=600, height=500, count=3,
                       dtype="uint16", crs="EPSG:32633", transform=UTM33_TRANSFORM) as dst:
        dst.write(np.full((3, 500, 600), 7, np.uint16))  # stored, constant, no nodata value
    result = run_scene(tmp_path / "constant.tif", tmp_path / "b", NeverCalled(), config)
    assert result.objects == 0 and result.skipped == result.tiles > 1
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["tiles"]["segmented"] == 0 and summary["tiles"]["skipped_empty"] == result.tiles
