"""``terramask find``: a run on a tiny random-weight SAM writes the classed outputs; bad
input is one line, a non-zero exit and no outputs under final names."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import shapely

from helpers.scenes import UTM33_TRANSFORM, blob_scene, write_geotiff


def _gpkg(path, geoms, labels=None, crs="EPSG:32633"):
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    fields, names = ([np.array(labels, dtype=np.int32)], ["label"]) if labels is not None else ([], [])
    pyogrio.raw.write(str(path), wkb, fields, names, geometry_type="Unknown", crs=crs, driver="GPKG")
    return path


def _world(x, y):
    return UTM33_TRANSFORM @ (x, y)


@pytest.fixture()
def scene(tmp_path):
    """256 x 320 uint16, bright rectangle at rows 60-140, cols 80-200, nodata in the left 20 columns."""
    return write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)


def _outputs(out):
    return [] if not out.exists() else [p.name for p in out.iterdir() if not p.name.startswith(".")]


@pytest.mark.slow
def test_find_similar_on_a_tiny_sam(run_cli, scene, tmp_path, tiny_sam_checkpoint):
    (x0, y0), (x1, y1) = _world(100, 80), _world(180, 120)
    ex = _gpkg(tmp_path / "ex.gpkg", [shapely.box(x0, y1, x1, y0)])
    out = tmp_path / "out"
    code, stdout, err = run_cli("find", scene, "--exemplars", ex, "--checkpoint", tiny_sam_checkpoint,
                                "--similarity", "-1", "--max-points", "4", "--out", out, "-q")
    assert code == 0, err
    assert "class(es) (object)" in stdout
    assert {"labels.tif", "classes.tif", "objects.gpkg", "masks.json", "overlay.png", "summary.json"} <= set(_outputs(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == {"0": None, "1": "object"} and summary["mode"] == "find-similar"
    meta = pyogrio.read_info(str(out / "objects.gpkg"))
    assert {"class", "score", "predicted_iou"} <= set(meta["fields"])


@pytest.mark.parametrize(("args", "message"), [
    ((), "nothing to find"),
    (("--text", "  "), "empty phrase"),
    (("--text", "roof. tree"), "plain words"),
    (("--exemplars", "missing.gpkg"), "no such file"),
])
def test_bad_phrases_and_files(run_cli, scene, tmp_path, args, message):
    out = tmp_path / "out"
    code, _, err = run_cli("find", scene, *args, "--out", out)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert _outputs(out) == []


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_exemplars_outside_the_scene_or_on_nodata(run_cli, scene, tmp_path, tiny_sam_checkpoint):
    out = tmp_path / "out"
    far = _gpkg(tmp_path / "far.gpkg", [shapely.Point(*_world(1000, 1000))])
    code, _, err = run_cli("find", scene, "--exemplars", far, "--checkpoint", tiny_sam_checkpoint, "--out", out)
    assert code == 2 and "exemplar 1 of far.gpkg lies outside the scene" in err
    nodata = _gpkg(tmp_path / "nodata.gpkg", [shapely.Point(*_world(5, 100))])
    code, _, err = run_cli("find", scene, "--exemplars", nodata, "--checkpoint", tiny_sam_checkpoint, "--out", out)
    assert code == 2 and "exemplar 1 of nodata.gpkg lies on nodata" in err
    counter = _gpkg(tmp_path / "neg.gpkg", [shapely.Point(*_world(120, 100))], labels=[0])
    code, _, err = run_cli("find", scene, "--exemplars", counter, "--checkpoint", tiny_sam_checkpoint, "--out", out)
    assert code == 2 and "no usable example" in err
    nocrs = _gpkg(tmp_path / "nocrs.gpkg", [shapely.Point(120, 100)], crs=None)
    code, _, err = run_cli("find", scene, "--exemplars", nocrs, "--checkpoint", tiny_sam_checkpoint, "--out", out)
    assert code == 2 and "has no CRS" in err
    assert _outputs(out) == []


def test_a_model_without_features_is_refused(run_cli, scene, tmp_path):
    ex = _gpkg(tmp_path / "ex.gpkg", [shapely.Point(*_world(120, 100))])
    code, _, err = run_cli("find", scene, "--exemplars", ex, "--model", "classic", "--out", tmp_path / "out")
    assert code == 1 and "SAM-family" in err


@pytest.mark.slow
def test_text_route_on_a_tiled_scene(run_cli, scene, tmp_path, tiny_sam_checkpoint):
    """Tiny random-weight OWLv2 + tiny SAM through the real loaders: the phrases become the
    classes of the objects (every box kept: --box-threshold 0)."""
    pytest.importorskip("terramask.models.concept.resolve")  # the text route's loader (helper D's)
    write_owlv2 = pytest.importorskip("helpers.tiny_concept").write_owlv2

    owl = write_owlv2(tmp_path / "owlv2")
    out = tmp_path / "out"
    code, stdout, err = run_cli("find", scene, "--text", "building", "--text", "pond", "--detector", "owlv2",
                                "--detector-checkpoint", owl, "--checkpoint", tiny_sam_checkpoint, "--box-threshold", "0",
                                "--tile-size", "192", "--overlap", "32", "--out", out, "-q")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "text" and summary["tiles"]["total"] == 4
    assert set(summary["classes"].values()) <= {None, "building", "pond"} and summary["objects"] > 0
    info = pyogrio.read_info(str(out / "objects.gpkg"))
    assert info["features"] == summary["objects"] and "score" in info["fields"]


@pytest.mark.slow
@pytest.mark.parametrize("route", ["owlv2", "sam3"])
def test_text_and_exemplars_together_on_the_tiny_real_models(run_cli, scene, tmp_path, tiny_sam_checkpoint, route):
    """--text with --exemplars through the real loaders: OWLv2 + tiny SAM combines the
    detector's objects with find-similar's (mode text+similar), SAM 3 reads the phrase and
    the example box as one query (mode text+exemplars); the class table holds the phrase
    and the exemplars' class, and every object has one of them."""
    concept = pytest.importorskip("helpers.tiny_concept")
    (x0, y0), (x1, y1) = _world(100, 80), _world(180, 120)
    ex = tmp_path / "ex.gpkg"
    pyogrio.raw.write(str(ex), np.array([shapely.to_wkb(shapely.box(x0, y1, x1, y0))], dtype=object),
                      [np.array([1], np.int32), np.array(["roof"], dtype=object)], ["label", "class"],
                      geometry_type="Unknown", crs="EPSG:32633", driver="GPKG")
    out = tmp_path / "out"
    if route == "owlv2":
        args = ["--detector", "owlv2", "--detector-checkpoint", concept.write_owlv2(tmp_path / "owlv2"),
                "--checkpoint", tiny_sam_checkpoint, "--box-threshold", "0", "--similarity", "-1", "--max-points", "4"]
    else:
        args = ["--model", "sam3", "--checkpoint", concept.write_sam3(tmp_path / "sam3"), "--threshold", "0"]
    code, stdout, err = run_cli("find", scene, "--text", "building", "--exemplars", ex, *args,
                                "--tile-size", "192", "--overlap", "32", "--out", out, "-q")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == ("text+similar" if route == "owlv2" else "text+exemplars")
    assert summary["classes"] == {"0": None, "1": "building", "2": "roof"}
    meta, _, _, fields = pyogrio.raw.read(str(out / "objects.gpkg"))
    classes = set(dict(zip(meta["fields"], fields, strict=True))["class"])
    assert summary["objects"] > 0 and classes <= {"building", "roof"}
