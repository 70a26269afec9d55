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
