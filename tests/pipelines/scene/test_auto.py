"""A small scene is a one-tile plan of the scene pipeline: every output on disk,
georeferenced and consistent, with the masks the generator gives for the whole image."""

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
from terramask.io.scene import open_scene
from terramask.pipelines.amg.generator import generate_compact
from terramask.pipelines.amg.params import AmgParams
from terramask.pipelines.scene.config import SceneRunConfig
from terramask.pipelines.scene.run import OUTPUTS, run_scene
from terramask.pipelines.scene.segmenters import BackendSegmenter

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


def run(scene, backend, out, mode="fast", **config):
    return run_scene(scene, out, BackendSegmenter(backend, PARAMS, mode), SceneRunConfig(progress=False, **config))


def expected_masks(scene_tif, backend, mode):
    """What the generator gives for the whole image, clipped to valid pixels, masks
    mostly in nodata dropped, largest first: the single-image `auto` of before."""
    with open_scene(scene_tif) as scene:
        result = generate_compact(backend, scene.read(), PARAMS, mode)
        valid = scene.valid_mask()
    masks = []
    for i in range(len(result)):
        dense = result.masks.dense(i)
        clipped = dense & valid
        if clipped.sum() and clipped.sum() >= 0.5 * dense.sum():
            masks.append((clipped, float(result.scores[i])))
    order = np.argsort([-m.sum() for m, _ in masks], kind="stable")
    return [masks[i] for i in order]


def test_small_scene_writes_every_output(backend, scene_tif, tmp_path):
    out = tmp_path / "out"
    result = run(scene_tif, backend, out, "exact")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert result.tiles == 1
    n = result.objects
    assert n >= 3

    # the same masks, scores and order as the generator on the whole image
    expected = expected_masks(scene_tif, backend, "exact")
    recs = json.loads((out / "masks.json").read_text())
    assert len(recs) == len(expected) == n
    for rec, (mask, score) in zip(recs, expected):
        assert np.array_equal(rle_to_mask(rec["segmentation"]), mask)
        assert rec["predicted_iou"] == pytest.approx(score)

    # labels.tif: georeferenced like the scene, IDs 1..N where the masks are
    with rasterio.open(out / "labels.tif") as ds:
        assert ds.crs.to_string() == "EPSG:32633" and ds.transform == UTM33_TRANSFORM
        assert ds.dtypes[0] == "uint32" and (ds.height, ds.width) == (150, 200)
        labels = ds.read(1)
    assert set(np.unique(labels)) <= set(range(n + 1))
    assert (labels[:, :12] == 0).all()  # nodata never belongs to an object

    # masks.json: reference records (COCO RLE), ID = position, largest first
    areas = [r["area"] for r in recs]
    assert areas == sorted(areas, reverse=True)
    for i, rec in enumerate(recs):
        mask = rle_to_mask(rec["segmentation"])
        assert isinstance(rec["segmentation"]["counts"], str) and mask.sum() == rec["area"]
        assert set(rec) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                            "crop_box"}
        assert rec["crop_box"] == [0, 0, 200, 150] and len(rec["point_coords"]) == 1
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert mask[labels == i + 1].all()  # where an object shows in labels.tif, it is in its mask
        assert not mask[:, :12].any()

    # objects.gpkg: one polygon per object in the scene CRS with the attributes
    import pyogrio
    import shapely

    meta, _, geoms, fields = pyogrio.raw.read(out / "objects.gpkg")
    cols = dict(zip(meta["fields"], fields))
    assert len(geoms) == n and "32633" in meta["crs"]
    assert list(cols) == ["id", "class", "predicted_iou", "stability_score", "n_tiles", "area_m2", "perimeter_m"]
    assert cols["id"].tolist() == list(range(1, n + 1))
    assert (cols["n_tiles"] == 1).all() and all(c is None for c in cols["class"])
    np.testing.assert_allclose(cols["area_m2"], np.array(areas) * 0.25)
    np.testing.assert_allclose(cols["predicted_iou"], [r["predicted_iou"] for r in recs], rtol=1e-6)
    shapes = shapely.from_wkb(geoms)
    np.testing.assert_allclose(shapely.area(shapes), np.array(areas) * 0.25)
    minx, miny, maxx, maxy = shapely.total_bounds(shapes)
    assert 500000 <= minx and maxx <= 500000 + 200 * 0.5 and 4000000 - 150 * 0.5 <= miny and maxy <= 4000000

    # overlay.png: the scene size
    import cv2

    assert cv2.imread(str(out / "overlay.png")).shape == (150, 200, 3)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == n and summary["mode"] == "exact" and summary["model"] == "structured-sam"
    assert summary["parameters"]["points_per_side"] == 6
    assert summary["scene"]["crs"] == "EPSG:32633"
    assert summary["tiles"]["total"] == 1 and summary["outputs"] == list(OUTPUTS)


def test_size_filters_in_ground_units_and_pixels(backend, scene_tif, tmp_path):
    def areas_of(out):
        return np.array([r["area"] for r in json.loads((out / "masks.json").read_text())])

    run(scene_tif, backend, tmp_path / "a")
    areas = np.sort(areas_of(tmp_path / "a"))
    assert len(areas) >= 3
    cut = int(areas[len(areas) // 2])
    # 0.25 m2 per pixel: the median area in m2 keeps the larger half
    run(scene_tif, backend, tmp_path / "b", min_area=f"{cut * 0.25}m2")
    lo = areas_of(tmp_path / "b")
    assert (lo >= cut).all() and len(lo) == int((areas >= cut).sum())
    hi = run(scene_tif, backend, tmp_path / "c", max_area=f"{cut}px")
    assert (areas_of(tmp_path / "c") <= cut).all() and hi.objects == int((areas <= cut).sum())
    assert hi.summary["filters"]["max_area_px"] == cut
    assert hi.summary["counts"]["dropped_by_area"] == len(areas) - hi.objects
    with pytest.raises(InputError, match="larger than --max-area"):
        run(scene_tif, backend, tmp_path / "d", min_area="2ha", max_area="10m2")


def test_ground_units_need_a_crs(backend, tmp_path):
    import cv2

    png = tmp_path / "plain.png"
    img = np.full((64, 80, 3), 120, np.uint8)
    img[20:40, 20:50] = 230
    cv2.imwrite(str(png), img)
    with pytest.raises(InputError, match="ground units need a georeferenced scene"):
        run(png, backend, tmp_path / "out", min_area="20m2")
    result = run(png, backend, tmp_path / "out2", min_area="20px")
    assert (tmp_path / "out2" / "labels.tif").exists() and result.summary["scene"]["crs"] is None
    import pyogrio

    assert {"area_px", "perimeter_px"} <= set(pyogrio.read_info(tmp_path / "out2" / "objects.gpkg")["fields"])


def test_uncompressed_rle_output(backend, scene_tif, tmp_path):
    run(scene_tif, backend, tmp_path / "a")
    run(scene_tif, backend, tmp_path / "b", output_mode="uncompressed_rle")
    a = json.loads((tmp_path / "a" / "masks.json").read_text())
    b = json.loads((tmp_path / "b" / "masks.json").read_text())
    assert len(a) == len(b) > 0 and isinstance(b[0]["segmentation"]["counts"], list)
    for ra, rb in zip(a, b):
        assert np.array_equal(rle_to_mask(ra["segmentation"]), rle_to_mask(rb["segmentation"]))
