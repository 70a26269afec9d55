"""`terramask predict` end to end: files on disk, georeference, refinement, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"


def test_predict_writes_georeferenced_outputs(run_cli, blob_tif, tiny_sam_checkpoint, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("predict", blob_tif, "--point", "140,100", "--point", "30,20,0",
                                "--checkpoint", tiny_sam_checkpoint, "--out", out)
    assert code == 0, err
    assert "3 candidate(s)" in stdout
    expected = {"mask.tif", "candidates.tif", "mask.gpkg", "mask.geojson", "overlay.png", "candidates.png",
                "logits.npy", "result.json"}
    assert {p.name for p in out.iterdir()} == expected
    with rasterio.open(blob_tif) as src, rasterio.open(out / "mask.tif") as m, rasterio.open(out / "candidates.tif") as c:
        assert (m.width, m.height, m.crs, m.transform) == (src.width, src.height, src.crs, src.transform)
        assert c.count == 3 and c.crs == src.crs
        mask = m.read(1)
        assert set(np.unique(mask)) <= {0, 1, 255}
        assert (mask[:, :20] == 255).all(), "scene nodata stays marked in the mask raster"
        np.testing.assert_array_equal(mask == 1, c.read(1) == 1)
    result = json.loads((out / "result.json").read_text())
    scores = [c["score"] for c in result["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert result["prompts"]["labels"] == [1, 0]
    assert result["scene"]["crs"] == "EPSG:32633"
    assert pyogrio.read_info(out / "mask.gpkg")["crs"] == "EPSG:32633"
    gj = json.loads((out / "mask.geojson").read_text())
    assert {f["properties"]["candidate"] for f in gj["features"]} == {1, 2, 3}
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 14 < lon < 16 and 35 < lat < 37, "GeoJSON is in lon/lat (UTM 33N, 500 km E, 4000 km N)"
    assert np.load(out / "logits.npy").shape == (1, 256, 256)


def test_refine_reuses_earlier_prompts_and_logits(run_cli, blob_tif, tiny_sam_checkpoint, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("predict", blob_tif, "--point", "140,100", "--checkpoint", tiny_sam_checkpoint, "--out", first)[0] == 0
    code, _, err = run_cli("predict", blob_tif, "--refine", first, "--point", "60,200,0",
                           "--checkpoint", tiny_sam_checkpoint, "--single", "--out", second)
    assert code == 0, err
    result = json.loads((second / "result.json").read_text())
    assert result["prompts"]["points"] == [[140, 100], [60, 200]]
    assert result["prompts"]["labels"] == [1, 0]
    assert result["prompts"]["prior_mask"] is True
    assert len(result["candidates"]) == 1
    assert not (second / "candidates.tif").exists()


def test_example_prompts_in_map_coordinates(run_cli, tiny_sam_checkpoint, tmp_path):
    code, _, err = run_cli("predict", EXAMPLE / "atlanta_pan_uint16.tif", "--prompts", EXAMPLE / "atlanta_prompts.geojson",
                           "--checkpoint", tiny_sam_checkpoint, "--single", "--out", tmp_path / "o")
    assert code == 0, err
    points = json.loads((tmp_path / "o" / "result.json").read_text())["prompts"]["points"]
    np.testing.assert_allclose(points, [[248.96, 176.48], [222.0, 218.0]], atol=0.01)


def _not_a_raster(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00garbage" * 10)
    return p


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("missing file", lambda t, s: [t / "nope.tif", "--point", "1,1"], "no such file"),
        ("corrupt raster", lambda t, s: [_not_a_raster(t), "--point", "1,1"], "broken.tif"),
        ("bad band", lambda t, s: [s, "--bands", "5", "--point", "140,100"], "band 5 does not exist"),
        ("degenerate box", lambda t, s: [s, "--box", "10,10,10,50"], "degenerate"),
        ("point outside", lambda t, s: [s, "--point", "999,10"], "outside"),
        ("point on nodata", lambda t, s: [s, "--point", "5,10"], "nodata"),
        ("malformed point", lambda t, s: [s, "--point", "a,b"], "--point"),
        ("no prompts", lambda t, s: [s], "no prompts"),
        ("unknown model", lambda t, s: [s, "--point", "140,100", "--model", "sam-vit-x"], "sam-vit-x"),
        ("weights missing offline", lambda t, s: [s, "--point", "140,100", "--model", "sam-vit-b"],
         "terramask models download sam-vit-b"),
    ],
)
def test_bad_input_gives_one_line_and_no_outputs(run_cli, blob_tif, tmp_path, case, args, message):
    out = tmp_path / "out"
    code, _, err = run_cli("predict", *args(tmp_path, blob_tif), "--out", out)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.startswith("terramask: error")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_dir(run_cli, blob_tif, tiny_sam_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("predict", blob_tif, "--point", "140,100", "--checkpoint", tiny_sam_checkpoint,
                           "--out", blocker / "out")
    assert code != 0 and "terramask: error" in err and str(blocker) in err


def test_second_predict_on_the_same_scene_reads_the_cached_embedding(run_cli, blob_tif, tiny_sam_checkpoint, tmp_path):
    runs = []
    for name, point in (("a", "140,100"), ("b", "150,110")):
        code, _, err = run_cli("predict", blob_tif, "--point", point, "--checkpoint", tiny_sam_checkpoint,
                               "--out", tmp_path / name)
        assert code == 0, err
        runs.append(json.loads((tmp_path / name / "result.json").read_text())["timings"])
    assert runs[0]["embedding_cache"] == "miss" and runs[0]["encoder_s"] > 0
    assert runs[1]["embedding_cache"] == "hit" and runs[1]["encoder_s"] == 0


# -- result.json, output folders as a unit, --refine validation ---------------------------

def _classic(run_cli, scene, out, *extra):
    code, stdout, err = run_cli("predict", scene, "--point", "140,100", "--model", "classic", *extra, "--out", out)
    assert code == 0, err
    return stdout


def _error_line(err):
    lines = [line for line in err.strip().splitlines() if line.startswith("terramask: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_result_json_has_one_prior_mask_key(run_cli, blob_tif, tmp_path):
    _classic(run_cli, blob_tif, tmp_path / "a")
    _classic(run_cli, blob_tif, tmp_path / "b", "--refine", tmp_path / "a", "--point", "60,200,0")
    first = json.loads((tmp_path / "a" / "result.json").read_text())["prompts"]
    second = json.loads((tmp_path / "b" / "result.json").read_text())["prompts"]
    assert "has_prior_mask" not in first and "has_prior_mask" not in second
    assert first["prior_mask"] is False and second["prior_mask"] is True


def test_failed_rerun_leaves_the_earlier_folder_whole(run_cli, blob_tif, tmp_path, monkeypatch):
    from terramask.core.errors import OutputError
    from terramask.pipelines.prompted import outputs

    out = tmp_path / "out"
    _classic(run_cli, blob_tif, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OutputError("disk full while writing mask.gpkg")

    monkeypatch.setattr(outputs, "write_vector", broken)
    code, _, err = run_cli("predict", blob_tif, "--point", "150,110", "--model", "classic", "--single", "--out", out)
    assert code != 0 and "disk full" in _error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "old files kept, no new file mixed in"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.tif", "out"], "no temporary folder left"
    monkeypatch.undo()
    _classic(run_cli, blob_tif, out, "--single")
    assert not (out / "candidates.tif").exists(), "a successful rerun replaces the folder as a whole"


def test_out_folder_with_other_files_is_refused(run_cli, blob_tif, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli("predict", blob_tif, "--point", "140,100", "--model", "classic", "--out", out)
    assert code != 0 and "notes.txt" in _error_line(err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_rerun_replaces_a_folder_with_gis_sidecars(run_cli, blob_tif, tmp_path):
    out = tmp_path / "out"
    _classic(run_cli, blob_tif, out)
    (out / "mask.tif.aux.xml").write_text("<PAMDataset/>")  # what QGIS leaves after computing statistics
    _classic(run_cli, blob_tif, out, "--single")
    assert not (out / "mask.tif.aux.xml").exists() and not (out / "candidates.tif").exists()


def _set_json(key_path, value):
    def tamper(folder):
        doc = json.loads((folder / "result.json").read_text())
        node = doc
        for key in key_path[:-1]:
            node = node[key]
        node[key_path[-1]] = value
        (folder / "result.json").write_text(json.dumps(doc))
    return tamper


def _save_logits(array, keep_checksum=False):
    def tamper(folder):
        np.save(folder / "logits.npy", array)
        if keep_checksum:
            import hashlib

            doc = json.loads((folder / "result.json").read_text())
            doc["logits_sha256"] = hashlib.sha256((folder / "logits.npy").read_bytes()).hexdigest()
            (folder / "result.json").write_text(json.dumps(doc))
    return tamper


NAN_LOGITS = np.full((1, 256, 256), np.nan, np.float32)


@pytest.mark.parametrize(
    "tamper,message",
    [
        (_save_logits(NAN_LOGITS, keep_checksum=True), "NaN"),
        (_save_logits(np.zeros((1, 256, 256), np.float32)), "does not belong"),
        (_save_logits(np.zeros((2, 256, 256), np.float32), keep_checksum=True), "(1, h, h)"),
        (_save_logits(np.zeros((1, 256, 256), np.int64), keep_checksum=True), "floats"),
        (_set_json(["window", "width"], -5), "window width"),
        (_set_json(["window", "col_off"], 300), "not inside"),
        (_set_json(["prompts", "labels"], [7]), "labels"),
        (_set_json(["prompts", "points"], [[1e400, 5]]), "finite"),
        (_set_json(["prompts", "points"], "oops"), "prompts"),
        (_set_json(["method"], "magic"), "method"),
        (lambda folder: (folder / "result.json").write_text("{not json"), "not JSON"),
    ],
)
def test_tampered_refine_folder_gives_one_clean_line(run_cli, blob_tif, tmp_path, tamper, message):
    first = tmp_path / "first"
    _classic(run_cli, blob_tif, first)
    tamper(first)
    code, stdout, err = run_cli("predict", blob_tif, "--refine", first, "--point", "60,200,0", "--model", "classic",
                                "--out", tmp_path / "second")
    assert code != 0 and stdout == ""
    line = _error_line(err)
    assert f"--refine {first}" in line and message in line, line
    assert not (tmp_path / "second").exists()


# -- prompts on several objects ------------------------------------------------------------

SQUARES = ((300, 400, 500, 560), (3300, 3200, 3480, 3420))


@pytest.fixture()
def far_tif(tmp_path):
    from helpers.scenes import write_geotiff

    px = np.full((3, 4000, 4000), 40, np.uint8)
    px += np.random.default_rng(0).integers(0, 10, px.shape, dtype=np.uint8)
    for x0, y0, x1, y1 in SQUARES:
        px[:, y0:y1, x0:x1] = 200
    return write_geotiff(tmp_path / "far.tif", px)


def test_two_boxes_far_apart_give_two_masks(run_cli, far_tif, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("predict", far_tif, "--box", "290,390,510,570", "--box", "3290,3190,3490,3430",
                                "--model", "classic", "--out", out)
    assert code == 0, err
    assert "2 object(s) over 2 window(s)" in stdout
    with rasterio.open(far_tif) as src, rasterio.open(out / "mask.tif") as m:
        assert (m.width, m.height, m.crs, m.transform) == (src.width, src.height, src.crs, src.transform)
        mask = m.read(1) == 1
    for x0, y0, x1, y1 in SQUARES:
        inside = mask[y0:y1, x0:x1].mean()
        assert inside > 0.95, f"square at {x0},{y0} found ({inside:.2f})"
    assert mask.sum() < 1.1 * sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in SQUARES), "nothing else marked"
    meta, _, wkb, fields = pyogrio.raw.read(out / "mask.gpkg")
    import shapely

    geoms = shapely.from_wkb(wkb)
    assert len(geoms) == 2 and dict(zip(meta["fields"], fields))["candidate"].tolist() == [1, 2]
    for geom, (x0, y0, x1, y1) in zip(geoms, SQUARES):
        with rasterio.open(far_tif) as src:
            square = shapely.box(*(src.transform @ (x0, y1)), *(src.transform @ (x1, y0)))
        assert geom.intersection(square).area > 0.9 * square.area and geom.area < 1.2 * square.area
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "tiled" and len(result["candidates"]) == 2
    assert {"mask.tif", "candidates.tif", "overlay.png", "logits.npy"} <= set(result["outputs"])


_HUGE_SCENE = """
import sys
import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window
n = 100_000
profile = dict(driver="GTiff", width=n, height=n, count=3, dtype="uint16", crs="EPSG:32633",
               transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000), tiled=True, blockxsize=256, blockysize=256,
               compress="deflate", SPARSE_OK="TRUE", BIGTIFF="YES")
with rasterio.open(sys.argv[1], "w", **profile) as dst:
    px = np.full((3, 512, 512), 1000, np.uint16)
    px[:, 200:300, 150:350] = 4000  # a 200 x 100 px roof at columns 50150..50350, rows 50200..50300
    dst.write(px, window=Window(50_000, 50_000, 512, 512))
"""

_PREDICT_AND_MEASURE = """
import sys
from terramask.cli.main import main
code = main(sys.argv[1:])
# VmHWM: this process's own peak (ru_maxrss would include the parent's across exec).
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(code)
"""


@pytest.mark.slow
def test_predict_on_a_100000_px_scene_stays_in_bounded_memory(tmp_path):
    """Scene-sized arrays would need 10 GB per mask band; only the encoded window is materialised."""
    import subprocess
    import sys

    scene, out = tmp_path / "huge.tif", tmp_path / "out"
    subprocess.run([sys.executable, "-c", _HUGE_SCENE, str(scene)], check=True, timeout=120)
    run = subprocess.run([sys.executable, "-c", _PREDICT_AND_MEASURE, "predict", str(scene), "--point", "50250,50250",
                          "--model", "classic", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    peak_mb = int(run.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1500, f"peak RSS {peak_mb:.0f} MB"
    with rasterio.open(scene) as src, rasterio.open(out / "mask.tif") as m, rasterio.open(out / "candidates.tif") as c:
        assert (m.width, m.height, m.crs, m.transform) == (src.width, src.height, src.crs, src.transform)
        assert c.count == 3 and (c.width, c.height) == (src.width, src.height)
        around = m.read(1, window=rasterio.windows.Window(50_100, 50_150, 300, 200))
        corner = m.read(1, window=rasterio.windows.Window(0, 0, 512, 512))
    roof = around[50:150, 50:250]
    assert roof.mean() > 0.95 and around.sum() < 1.2 * roof.size, "the mask is the roof, at its place"
    assert not corner.any(), "outside the encoded window the mask is 0"
    window = json.loads((out / "result.json").read_text())["window"]
    assert window["width"] == window["height"] == 1024


@pytest.mark.slow
def test_refining_a_tiled_result_keeps_its_prompts_without_a_prior(run_cli, far_tif, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    code, stdout, err = run_cli("predict", far_tif, "--point", "400,480", "--point", "3400,3300", "--model", "classic",
                                "--out", first)
    assert code == 0 and "1 object(s) over 2 window(s)" in stdout, err
    assert np.load(first / "logits.npy").shape == (2, 256, 256)
    code, _, err = run_cli("predict", far_tif, "--refine", first, "--point", "420,900,0", "--model", "classic",
                           "--out", second)
    assert code == 0, err
    result = json.loads((second / "result.json").read_text())
    assert result["method"] == "tiled"
    assert result["prompts"]["points"] == [[400, 480], [3400, 3300], [420, 900]]
    assert result["prompts"]["labels"] == [1, 1, 0] and result["prompts"]["prior_mask"] is False
