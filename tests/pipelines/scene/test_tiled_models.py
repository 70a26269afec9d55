"""Tiled runs with real backends: the weight-free classic engine on a real 16-bit
GeoTIFF, and a random-weight SAM through automatic mask generation (compact masks)."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio

from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.run import run_scene
from terramask.pipelines.scene.segmenters import AutoSegmenter


def gpkg_table(path):
    meta, _, geoms, cols = pyogrio.raw.read(path)
    return dict(zip(meta["fields"], cols)), geoms


@pytest.mark.slow
def test_classic_on_a_real_geotiff_labels_match_polygons(rs_data, tmp_path):
    scene = rs_data / "spacenet_atlanta_buildings" / "full" / "sample_geotiff.tif"
    # the colour merge criterion: its regions depend little on the tile around them, so the
    # visibility bound below holds (classic's default, the size-aware heterogeneity cost,
    # splits overlaps differently per tile: ~70 % of objects fully visible)
    segmenter = AutoSegmenter("classic", params={"criterion": "colour"})
    result = run_scene(scene, tmp_path, segmenter, SceneRunConfig(tile_size=512, overlap=96, progress=False))
    assert result.tiles == 4 and result.objects > 10
    with rasterio.open(result.paths["labels.tif"]) as ds, rasterio.open(scene) as src:
        labels = ds.read(1)
        assert ds.crs == src.crs and ds.transform == src.transform
    table, _ = gpkg_table(result.paths["objects.gpkg"])
    ids = set(int(i) for i in np.unique(labels)) - {0}
    all_ids = set(int(i) for i in table["id"])
    assert all_ids == set(range(1, result.objects + 1))
    # Classic regions of one tile do not overlap. Where two tiles split an overlap into
    # regions differently, both views are kept and the smaller shows: a few objects are
    # partly (rarely fully) hidden, none is painted beyond its polygon.
    assert ids <= all_ids and len(ids) >= 0.95 * len(all_ids)
    counts = np.bincount(labels.ravel(), minlength=max(all_ids) + 1)
    px_m2 = 0.25  # 0.5 m pixels
    pixels = np.round(table["area_m2"] / px_m2).astype(int)
    assert np.all(counts[table["id"]] <= pixels)
    assert np.mean(counts[table["id"]] == pixels) > 0.8
    summary = json.loads(result.paths["summary.json"].read_text())
    assert summary["segmenter"]["model"] == "classic"
    assert summary["merge"]["matches"] > 0  # regions cross the tile edges


@pytest.mark.slow
def test_sam_automatic_generation_per_tile(tiny_sam_checkpoint, tmp_path):
    from helpers.blobs import blob_scene, disc, rect
    from helpers.scenes import write_geotiff

    shape = (256, 400)  # two tiles
    path = write_geotiff(tmp_path / "s.tif", blob_scene(shape, [rect(shape, 180, 40, 300, 120), disc(shape, 80, 180, 40)]))
    params = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    result = run_scene(path, tmp_path / "out", AutoSegmenter(checkpoint=str(tiny_sam_checkpoint), params=params),
                       SceneRunConfig(tile_size=256, overlap=64, progress=False))
    summary = json.loads(result.paths["summary.json"].read_text())
    assert result.tiles == 2 and summary["tiles"]["segmented"] == 2
    assert summary["counts"]["masks"] > 0 and 0 < result.objects <= summary["counts"]["masks"]
    assert summary["segmenter"]["params"]["points_per_side"] == 2
    table, _ = gpkg_table(result.paths["objects.gpkg"])
    assert len(table["id"]) == result.objects
    assert np.all(np.isfinite(table["stability_score"]))
    recs = json.loads(result.paths["masks.json"].read_text())
    assert len(recs) == result.objects and all(len(r["point_coords"]) == 1 for r in recs)
    with rasterio.open(result.paths["labels.tif"]) as ds:
        labels = ds.read(1)
    assert set(np.unique(labels)) - {0} <= set(int(i) for i in table["id"])
