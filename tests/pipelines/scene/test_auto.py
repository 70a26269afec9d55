"""Single-scene automatic segmentation: every output on disk, georeferenced and consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from helpers.scenes import UTM33_TRANSFORM, write_geotiff
from helpers.structured_sam import StructuredBackend, build_structured_sam
from helpers.tiny_sam import write_sam_checkpoint
from terramask.core.errors import InputError
from terramask.core.rle import rle_to_mask
from terramask.pipelines.amg.params import AmgParams
from terramask.pipelines.scene.single import OUTPUTS, labels_image, run_auto
from terramask.pipelines.amg.masks import CompactMasks

PARAMS = AmgParams(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = write_sam_checkpoint(tmp_path_factory.mktemp("auto") / "tiny.pth", arch="tiny", seed=0)
    return StructuredBackend(build_structured_sam(path))


@pytest.fixture()
def scene_tif(tmp_path):
    """A 16-bit 3-band UTM scene (0.5 m pixels) with a nodata strip on the left."""
    rng = np.random.default_rng(0)
    px = rng.integers(900, 1100, size=(3, 150, 200)).astype(np.uint16)
    px[:, 40:100, 60:150] += 2500
    px[:, :, :12] = 0
    return write_geotiff(tmp_path / "scene.tif", px, nodata=0)


def test_run_auto_writes_every_output(backend, scene_tif, tmp_path):
    out = tmp_path / "out"
    run = run_auto(scene_tif, backend, out, PARAMS, "exact", model_name="structured")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    n = len(run.result)
    assert n >= 3

    # labels.tif: georeferenced like the scene, IDs 1..N where the masks are
    with rasterio.open(out / "labels.tif") as ds:
        assert ds.crs.to_string() == "EPSG:32633" and ds.transform == UTM33_TRANSFORM
        assert ds.dtypes[0] == "uint32" and (ds.height, ds.width) == (150, 200)
        labels = ds.read(1)
    assert set(np.unique(labels)) <= set(range(n + 1))
    assert (labels[:, :12] == 0).all()  # nodata never belongs to an object

    # masks.json: reference records (COCO RLE), ID = position, largest first
    recs = json.loads((out / "masks.json").read_text())
    assert len(recs) == n
    areas = [r["area"] for r in recs]
    assert areas == sorted(areas, reverse=True)
    for i, rec in enumerate(recs):
        mask = rle_to_mask(rec["segmentation"])
        assert isinstance(rec["segmentation"]["counts"], str) and mask.sum() == rec["area"]
        assert set(rec) >= {"bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        # where an object shows in labels.tif, it is in its mask
        assert mask[labels == i + 1].all()
        assert not mask[:, :12].any()

    # objects.gpkg: one polygon per object in the scene CRS with the attributes
    import pyogrio
    import shapely

    meta, _, geoms, fields = pyogrio.raw.read(out / "objects.gpkg")
    cols = dict(zip(meta["fields"], fields))
    assert len(geoms) == n and "32633" in meta["crs"]
    assert {"id", "predicted_iou", "stability_score", "area_m2"} <= set(cols)
    assert cols["id"].tolist() == list(range(1, n + 1))
    np.testing.assert_allclose(cols["area_m2"], np.array(areas) * 0.25)
    np.testing.assert_allclose(cols["predicted_iou"], [r["predicted_iou"] for r in recs], rtol=1e-6)
    shapes = shapely.from_wkb(geoms)
    np.testing.assert_allclose(shapely.area(shapes), np.array(areas) * 0.25)
    minx, miny, maxx, maxy = shapely.total_bounds(shapes)
    assert 500000 <= minx and maxx <= 500000 + 200 * 0.5 and 4000000 - 150 * 0.5 <= miny and maxy <= 4000000

    # overlay.png: the scene size, objects tinted
    import cv2

    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (150, 200, 3)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == n and summary["mode"] == "exact" and summary["model"] == "structured"
    assert summary["parameters"]["points_per_side"] == 6
    assert summary["scene"]["crs"] == "EPSG:32633"
    assert {"read", "encoder", "decoder", "write", "total"} <= set(summary["timings_s"])


def test_size_filters_in_ground_units_and_pixels(backend, scene_tif, tmp_path):
    full = run_auto(scene_tif, backend, tmp_path / "a", PARAMS, "fast")
    areas = np.sort(full.result.areas)
    assert len(areas) >= 3
    cut = int(areas[len(areas) // 2])
    # 0.25 m2 per pixel: the median area in m2 keeps the larger half
    lo = run_auto(scene_tif, backend, tmp_path / "b", PARAMS, "fast", min_area=f"{cut * 0.25}m2")
    assert (lo.result.areas >= cut).all() and len(lo.result) == int((areas >= cut).sum())
    hi = run_auto(scene_tif, backend, tmp_path / "c", PARAMS, "fast", max_area=f"{cut}px")
    assert (hi.result.areas <= cut).all() and len(hi.result) == int((areas <= cut).sum())
    assert hi.summary["filters"]["max_area_px"] == cut
    with pytest.raises(InputError, match="larger than --max-area"):
        run_auto(scene_tif, backend, tmp_path / "d", PARAMS, min_area="2ha", max_area="10m2")


def test_ground_units_need_a_crs(backend, tmp_path):
    import cv2

    png = tmp_path / "plain.png"
    cv2.imwrite(str(png), np.full((64, 80, 3), 120, np.uint8))
    with pytest.raises(InputError, match="ground units need a georeferenced scene"):
        run_auto(png, backend, tmp_path / "out", PARAMS, min_area="20m2")
    run = run_auto(png, backend, tmp_path / "out2", PARAMS, min_area="20px")
    assert (tmp_path / "out2" / "labels.tif").exists() and run.summary["scene"]["crs"] is None


def test_large_scenes_point_to_tiling(backend, scene_tif, tmp_path):
    with pytest.raises(InputError, match="tile"):
        run_auto(scene_tif, backend, tmp_path / "out", PARAMS, max_side=100)


def test_labels_keep_the_smaller_object_visible():
    big = np.zeros((20, 20), bool)
    big[2:18, 2:18] = True
    small = np.zeros((20, 20), bool)
    small[5:8, 5:8] = True
    masks = CompactMasks.from_dense(np.stack([small, big]))
    labels = labels_image(masks)
    assert (labels[5:8, 5:8] == 1).all() and labels[10, 10] == 2 and labels[0, 0] == 0
