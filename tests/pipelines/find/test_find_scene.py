"""find_scene over a tiled GeoTIFF: exemplars of one kind find the others across tiles (an
object crossing a tile edge is one object with its class), the class raster, columns,
summary and overlay; bad exemplars are one clear error and leave no outputs."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from helpers.colour_tiles import BLUE_BOXES, CONFIG, RED_BOXES, SIDE, colour_tiles_scene
from helpers.colour_tiles import world_box as _world_box
from helpers.colour_tiles import write_exemplars as _exemplars
from helpers.feature_backends import ColourFeatureBackend
from helpers.scenes import UTM33_TRANSFORM
from terramask.core.errors import InputError, ModelError
from terramask.pipelines.find.run import find_scene
from terramask.pipelines.scene.run import OUTPUTS
from terramask.pipelines.scene.sink import CLASSES_NAME


def test_exemplar_finds_its_kind_across_tiles(tmp_path):
    scene = colour_tiles_scene(tmp_path)
    ex = _exemplars(tmp_path / "ex.gpkg", [_world_box(*RED_BOXES[0]), _world_box(*BLUE_BOXES[0])], [1, 0],
                    ["roof", None])
    run = find_scene(scene, tmp_path / "out", exemplars=ex, backend=ColourFeatureBackend(), config=CONFIG)
    assert run.tiles == 9
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == set(OUTPUTS) | {CLASSES_NAME}
    meta, _, wkb, fields = pyogrio.raw.read(str(tmp_path / "out" / "objects.gpkg"))
    cols = dict(zip(meta["fields"], fields, strict=True))
    assert list(meta["fields"][:4]) == ["id", "class", "score", "predicted_iou"]
    assert len(wkb) == len(RED_BOXES), "one object per red rectangle; the one crossing tiles is merged"
    assert set(cols["class"]) == {"roof"}
    assert np.all(cols["score"] >= 0.6)
    polys = shapely.from_wkb(wkb)
    for box in RED_BOXES:
        truth = _world_box(*box)
        best = max(p.intersection(truth).area / p.union(truth).area for p in polys)
        assert best > 0.9
    crossing = max(polys, key=lambda p: p.intersection(_world_box(*RED_BOXES[1])).area)
    assert cols["n_tiles"][list(polys).index(crossing)] >= 2
    with rasterio.open(tmp_path / "out" / CLASSES_NAME) as src:
        classes = src.read(1)
        assert src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32633
    red = np.zeros((SIDE, SIDE), bool)
    for x0, y0, x1, y1 in RED_BOXES:
        red[y0:y1, x0:x1] = True
    assert ((classes == 1) == red).mean() > 0.99
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == {"0": None, "1": "roof"}
    assert summary["mode"] == "find-similar" and summary["segmenter"]["params"]["prototypes"]["negative"] == 1
    records = json.loads((tmp_path / "out" / "masks.json").read_text())
    assert {r["class"] for r in records} == {"roof"} and all(r["score"] >= 0.6 for r in records)


def test_points_and_two_classes(tmp_path):
    scene = colour_tiles_scene(tmp_path)
    t = UTM33_TRANSFORM
    ex = _exemplars(tmp_path / "ex.gpkg", [shapely.Point(t @ (40, 40)), shapely.Point(t @ (170, 170))], [1, 1],
                    ["roof", "pool"])
    run = find_scene(scene, tmp_path / "out", exemplars=ex, backend=ColourFeatureBackend(), config=CONFIG)
    assert run.summary["classes"] == {"0": None, "1": "roof", "2": "pool"}
    meta, _, wkb, fields = pyogrio.raw.read(str(tmp_path / "out" / "objects.gpkg"))
    classes = list(dict(zip(meta["fields"], fields, strict=True))["class"])
    assert classes.count("roof") == len(RED_BOXES) and classes.count("pool") == len(BLUE_BOXES)


def test_bad_exemplars_leave_no_outputs(tmp_path):
    scene = colour_tiles_scene(tmp_path, nodata_cols=100)
    backend = ColourFeatureBackend()
    out = tmp_path / "out"
    far = _exemplars(tmp_path / "far.gpkg", [_world_box(600, 600, 650, 650)], [1], ["roof"])
    with pytest.raises(InputError, match=r"exemplar 1 of far.gpkg lies outside the scene"):
        find_scene(scene, out, exemplars=far, backend=backend, config=CONFIG)
    nodata = _exemplars(tmp_path / "nd.gpkg", [_world_box(10, 10, 60, 60)], [1], ["roof"])
    with pytest.raises(InputError, match=r"exemplar 1 of nd.gpkg lies on nodata"):
        find_scene(scene, out, exemplars=nodata, backend=backend, config=CONFIG)
    counter = _exemplars(tmp_path / "neg.gpkg", [_world_box(*RED_BOXES[2])], [0], [None])
    with pytest.raises(InputError, match="no usable example"):
        find_scene(scene, out, exemplars=counter, backend=backend, config=CONFIG)
    with pytest.raises(InputError, match="nothing to find"):
        find_scene(scene, out, backend=backend, config=CONFIG)
    with pytest.raises(InputError, match="empty phrase"):
        find_scene(scene, out, phrases=[" "], config=CONFIG)
    from helpers.fake_backends import FixedGenerator

    with pytest.raises(ModelError, match="SAM-family"):
        find_scene(scene, out, exemplars=counter, backend=FixedGenerator(np.zeros((1, 4, 4), bool)), config=CONFIG)
    assert not out.exists() or not any(p.name in OUTPUTS for p in out.iterdir())
