"""One output schema at every scene size: a one-tile scene and a tiled scene give the
same files, columns, dtypes, record keys, summary keys and label raster type."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import rasterio

from helpers.blobs import BlobSegmenter, blob_scene, disc, rect
from helpers.scenes import write_geotiff
from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.run import OUTPUTS, run_scene


def schema(out):
    meta = pyogrio.read_info(out / "objects.gpkg")
    records = json.loads((out / "masks.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    with rasterio.open(out / "labels.tif") as ds:
        labels = (ds.dtypes[0], ds.crs.to_string(), ds.nodata, ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"))
    return {
        "files": sorted(p.name for p in out.iterdir()),
        "columns": list(zip(meta["fields"].tolist(), meta["dtypes"].tolist())),
        "geometry": meta["geometry_type"],
        "record_keys": {tuple(r) for r in records},
        "summary_keys": sorted(summary),
        "summary_sections": {k: sorted(v) for k, v in summary.items() if isinstance(v, dict)},
        "labels": labels,
    }


def test_one_tile_and_tiled_scenes_share_one_schema(tmp_path):
    shape = (300, 420)
    objs = [rect(shape, 20, 20, 90, 70), disc(shape, 300, 150, 40), rect(shape, 100, 200, 400, 230)]
    path = write_geotiff(tmp_path / "s.tif", blob_scene(shape, objs))
    one = run_scene(path, tmp_path / "one", BlobSegmenter(), SceneRunConfig(tile_size=512, progress=False))
    many = run_scene(path, tmp_path / "many", BlobSegmenter(),
                     SceneRunConfig(tile_size=128, overlap=32, progress=False))
    assert one.tiles == 1 and many.tiles > 4
    assert one.objects == many.objects == 3
    a, b = schema(tmp_path / "one"), schema(tmp_path / "many")
    assert a == b
    assert a["files"] == sorted(OUTPUTS)
    assert a["labels"] == ("uint32", "EPSG:32633", 0.0, "COG")
    assert a["record_keys"] == {("segmentation", "area", "bbox", "predicted_iou", "point_coords",
                                 "stability_score", "crop_box")}
    # the same objects, pixel for pixel
    with rasterio.open(tmp_path / "one" / "labels.tif") as x, rasterio.open(tmp_path / "many" / "labels.tif") as y:
        la, lb = x.read(1), y.read(1)
    assert sorted(np.bincount(la.ravel())[1:].tolist()) == sorted(np.bincount(lb.ravel())[1:].tolist())
    assert np.array_equal(la > 0, lb > 0)
