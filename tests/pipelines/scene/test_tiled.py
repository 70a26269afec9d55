"""Tiled automatic segmentation of a scene file: objects across tile edges and corners
come out as one object in labels.tif and objects.gpkg; scene-wide stretch; nodata tiles
skipped; outputs georeferenced."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio

from helpers.blobs import BlobSegmenter, blob_scene, disc, rect
from helpers.scenes import UTM33_TRANSFORM, write_geotiff
from terramask.core.errors import InputError, SceneError
from terramask.core.maskset import MaskSet
from terramask.pipelines.scene.config import EngineConfig, SceneRunConfig
from terramask.pipelines.scene.run import run_scene
from terramask.pipelines.scene.segmenters import BackendSegmenter

SHAPE = (600, 900)  # tiles of 256 sharing 64: columns start 0, 192, 384, 576, 644; rows 0, 192, 344
NODATA_COLS = 256   # the last tile column holds nodata only


def run_tiled(scene, out, segmenter, engine=None, **config):
    config = {"tile_size": 256, "overlap": 64, "progress": False, **config}
    return run_scene(scene, out, segmenter, SceneRunConfig(**config), engine)


def objects():
    s = SHAPE
    return [
        disc(s, 100, 100, 30),              # inside tile r0_c0
        rect(s, 230, 20, 300, 60),          # crosses the c0|c1 edge
        rect(s, 200, 120, 250, 170),        # inside the c0|c1 overlap (seen whole twice)
        rect(s, 205, 205, 245, 245),        # inside the overlap corner of four tiles
        rect(s, 350, 170, 480, 290),        # across a corner, larger than the overlap
        rect(s, 20, 500, 600, 520),         # a stripe through a row of tiles
        disc(s, 520, 420, 25),              # near the r1|r2 and c2|c3 overlaps
    ]


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    return write_geotiff(path, blob_scene(SHAPE, objects(), nodata_cols=NODATA_COLS), nodata=0)


@pytest.fixture(scope="module")
def tiled_run(scene_tif, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return run_tiled(scene_tif, out, BlobSegmenter())


def read_labels(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds


def test_every_object_once_pixel_exact(tiled_run):
    labels, _ = read_labels(tiled_run.paths["labels.tif"])
    assert labels.dtype == np.uint32 and labels.shape == SHAPE
    truth = objects()
    ids = set()
    for k, obj in enumerate(truth):
        values = np.unique(labels[obj])
        assert len(values) == 1 and values[0] != 0, f"object {k} carries labels {values[:10]}"
        ids.add(int(values[0]))
        assert np.array_equal(labels == values[0], obj), f"object {k} is not pixel exact"
    union = np.any(truth, axis=0)
    assert not labels[~union].any(), "labels outside the objects (per-tile stretch noise?)"
    assert len(ids) == len(truth) == tiled_run.objects


def test_labels_are_a_georeferenced_cog(tiled_run):
    with rasterio.open(tiled_run.paths["labels.tif"]) as ds:
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == UTM33_TRANSFORM
        assert ds.nodata == 0
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
        assert ds.overviews(1), "no overviews"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_objects_gpkg(tiled_run):
    info = pyogrio.read_info(tiled_run.paths["objects.gpkg"])
    assert info["crs"] == "EPSG:32633"
    assert info["features"] == len(objects())
    fields = list(info["fields"])
    assert fields == ["id", "class", "predicted_iou", "stability_score", "n_tiles", "area_m2", "perimeter_m"]
    meta, _, geoms, cols = pyogrio.raw.read(tiled_run.paths["objects.gpkg"])
    table = dict(zip(meta["fields"], cols))
    pixel_m2 = 0.25  # 0.5 m pixels
    areas = sorted(np.round(table["area_m2"] / pixel_m2).astype(int))
    assert areas == sorted(int(o.sum()) for o in objects())
    # the stripe is made of parts from several tiles; the rect in a corner square was seen whole
    stripe = int(np.argmax(table["area_m2"]))
    assert table["n_tiles"][stripe] >= 3
    assert set(table["id"]) == set(range(1, len(objects()) + 1))
    assert np.all((table["predicted_iou"] > 0.5) & (table["predicted_iou"] <= 1.0))


def test_nodata_tiles_skipped_and_summary(tiled_run):
    summary = json.loads(tiled_run.paths["summary.json"].read_text())
    assert summary["tiles"]["total"] == 15 and summary["tiles"]["grid"] == [3, 5]
    assert summary["tiles"]["skipped_empty"] == 3 == tiled_run.skipped
    assert summary["objects"] == len(objects())
    assert summary["scene"]["stretch"] is not None and summary["scene"]["crs"] == "EPSG:32633"
    assert summary["merge"]["matches"] > 0
    assert summary["merge"]["pending_peak"] < summary["merge"]["parts"]
    assert summary["throughput"]["km2_per_h"] > 0
    assert summary["outputs"] == ["labels.tif", "objects.gpkg", "masks.json", "overlay.png", "summary.json"]


def test_overlay_quicklook(tiled_run, scene_tif, tmp_path):
    import cv2

    over = cv2.imread(str(tiled_run.paths["overlay.png"]))
    assert over.shape[:2] == SHAPE
    small = run_tiled(scene_tif, tmp_path, BlobSegmenter(), quicklook_size=300)
    assert cv2.imread(str(small.paths["overlay.png"])).shape[:2] == (200, 300)


def test_tiles_see_the_scene_wide_stretch(scene_tif, tmp_path):
    seen = []

    class Recorder(BlobSegmenter):
        def segment(self, image):
            seen.append(image.stretch)
            return super().segment(image)

    run_tiled(scene_tif, tmp_path, Recorder())
    assert len(seen) == 12 and all(s == seen[0] for s in seen) and seen[0] is not None


def test_small_scene_is_one_tile(tmp_path):
    shape = (120, 150)
    objs = [rect(shape, 0, 0, 40, 30), disc(shape, 100, 60, 20)]
    path = write_geotiff(tmp_path / "small.tif", blob_scene(shape, objs))
    result = run_tiled(path, tmp_path / "out", BlobSegmenter())
    assert result.tiles == 1 and result.objects == 2
    labels, _ = read_labels(result.paths["labels.tif"])
    assert labels.shape == shape and set(np.unique(labels)) == {0, 1, 2}


class Broken:
    def __call__(self):
        return lambda image: MaskSet.empty((3, 3))


def test_wrong_mask_grid_is_an_error_and_leaves_no_outputs(scene_tif, tmp_path):
    with pytest.raises(InputError, match="shape"):
        run_tiled(scene_tif, tmp_path, Broken())
    assert not (tmp_path / "labels.tif").exists() and not (tmp_path / "objects.gpkg").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_bad_inputs(tmp_path, scene_tif):
    with pytest.raises(SceneError):
        run_tiled(tmp_path / "missing.tif", tmp_path / "o", BlobSegmenter())
    with pytest.raises(InputError, match="overlap"):
        run_tiled(scene_tif, tmp_path / "o", BlobSegmenter(), overlap=256)
    with pytest.raises(InputError, match="too small"):
        run_tiled(scene_tif, tmp_path / "o", BlobSegmenter(), tile_size=32, overlap=8)
    with pytest.raises(InputError, match="local engine"):
        run_tiled(scene_tif, tmp_path / "o", BackendSegmenter(object()), engine=EngineConfig("ray"))


def test_area_filter_judges_whole_merged_objects(scene_tif, tmp_path):
    # the stripe (11,600 px) is assembled from tile parts of at most 256 x 20 px
    result = run_tiled(scene_tif, tmp_path, BlobSegmenter(), min_area="3000px", max_area=12000)
    assert result.objects == 1 and result.summary["counts"]["dropped_by_area"] == len(objects()) - 1
    labels, _ = read_labels(result.paths["labels.tif"])
    assert np.array_equal(labels == 1, objects()[5])


def test_masks_json_records_in_scene_pixels(tiled_run):
    from terramask.core.rle import rle_to_mask

    recs = json.loads(tiled_run.paths["masks.json"].read_text())
    labels, _ = read_labels(tiled_run.paths["labels.tif"])
    assert len(recs) == tiled_run.objects
    truth = {objects()[k].tobytes() for k in range(len(objects()))}
    for i, rec in enumerate(recs):
        mask = rle_to_mask(rec["segmentation"])
        assert mask.shape == SHAPE and mask.sum() == rec["area"]
        assert np.array_equal(mask, labels == i + 1)  # the objects do not overlap
        assert mask.tobytes() in truth
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        x, y, w, h = rec["crop_box"]
        assert (w, h) == (256, 256) and x in (0, 192, 384, 576, 644) and y in (0, 192, 344)
