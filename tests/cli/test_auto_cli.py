"""``terramask auto``: outputs for real GeoTIFFs, parameters as options, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

OUTPUTS = {"labels.tif", "objects.gpkg", "masks.json", "overlay.png", "summary.json"}


def test_classic_model_on_a_real_geotiff_keeps_the_crs(run_cli, rs_data, tmp_path):
    scene = rs_data / "geotiffs" / "solaris_ms1_uint16.tif"
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("auto", scene, "--model", "classic", "--min-area", "20m2", "--out", out)
    assert code == 0, stderr
    assert "objects" in stdout
    assert {p.name for p in out.iterdir()} == OUTPUTS
    with rasterio.open(scene) as src, rasterio.open(out / "labels.tif") as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        labels = dst.read(1)
    summary = json.loads((out / "summary.json").read_text())
    n = summary["objects"]
    assert n > 0 and labels.max() == n
    recs = json.loads((out / "masks.json").read_text())
    assert len(recs) == n and all(r["area"] >= 20 for r in recs)  # 1 m pixels: 20 m2 = 20 px
    assert summary["filters"]["min_area"] == "20m2"


@pytest.mark.slow
def test_sam_checkpoint_with_preset_and_single_options(run_cli, rs_data, tmp_path):
    from helpers.tiny_sam import write_sam_checkpoint

    ckpt = write_sam_checkpoint(tmp_path / "tiny.pth", arch="tiny")
    scene = rs_data / "geotiffs" / "naip_m_4709963_se_14_1_20200831.tif"
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "auto", scene, "--checkpoint", ckpt, "--preset", "quick", "--points-per-side", "4",
        "--pred-iou-thresh", "0", "--stability-score-thresh", "0.2", "--bands", "4,1,2", "--mode", "exact",
        "--output-mode", "uncompressed_rle", "--quiet", "--out", out,
    )
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "quick" and summary["mode"] == "exact"
    assert summary["parameters"]["points_per_side"] == 4 and summary["parameters"]["pred_iou_thresh"] == 0
    assert summary["scene"]["bands"] == [4, 1, 2] and summary["scene"]["crs"] == "EPSG:26914"
    recs = json.loads((out / "masks.json").read_text())
    assert len(recs) == summary["objects"] > 0 and isinstance(recs[0]["segmentation"]["counts"], list)


def test_point_grids_file(run_cli, blob_tif, tmp_path):
    grids = tmp_path / "grids.json"
    grids.write_text(json.dumps([[[0.5, 0.5], [0.25, 0.75]]]))
    out = tmp_path / "out"
    code, _, stderr = run_cli("auto", blob_tif, "--model", "classic", "--point-grids", grids, "--out", out)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["point_grids"] == [[[0.5, 0.5], [0.25, 0.75]]]
    assert summary["parameters"]["points_per_side"] is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["--points-per-side", "0"], "points_per_side must be a positive integer"),
        (["--points-per-side", "-3"], "points_per_side"),
        (["--pred-iou-thresh", "1.5"], "pred_iou_thresh must be a number in [0, 1]"),
        (["--stability-score-thresh", "-0.1"], "stability_score_thresh"),
        (["--box-nms-thresh", "2"], "box_nms_thresh"),
        (["--crop-n-layers", "-1"], "crop_n_layers"),
        (["--min-mask-region-area", "-5"], "min_mask_region_area"),
        (["--points-per-side", "2", "--crop-n-layers", "2", "--crop-n-points-downscale-factor", "2"], "zero points"),
        (["--preset", "huge"], "unknown preset"),
        (["--min-area", "5 acres"], "--min-area"),
        (["--min-area", "1ha", "--max-area", "10m2"], "larger than --max-area"),
        (["--bands", "9,1,2"], "band 9 does not exist"),
    ],
)
def test_bad_values_give_one_clear_line(run_cli, blob_tif, tmp_path, args, words):
    out = tmp_path / "out"
    code, _, stderr = run_cli("auto", blob_tif, "--model", "classic", *args, "--out", out)
    assert code == 2
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("terramask: error:") and words in lines[0], stderr
    assert not out.exists() or not any(out.iterdir())


def test_ground_area_without_crs_and_missing_scene(run_cli, tmp_path):
    import cv2

    png = tmp_path / "plain.png"
    cv2.imwrite(str(png), np.full((40, 50, 3), 90, np.uint8))
    code, _, stderr = run_cli("auto", png, "--model", "classic", "--min-area", "3ha", "--out", tmp_path / "o")
    assert code == 2 and "ground units need a georeferenced scene" in stderr
    code, _, stderr = run_cli("auto", tmp_path / "nope.tif", "--model", "classic", "--out", tmp_path / "o2")
    assert code != 0 and "nope.tif" in stderr


def test_help_lists_every_reference_parameter(run_cli):
    from terramask.pipelines.amg.params import AmgParams

    code, stdout, _ = run_cli("auto", "--help")
    assert code == 0
    for name in AmgParams.names():
        assert "--" + name.replace("_", "-") in stdout, name


def test_tiled_scene_gets_the_same_files(run_cli, blob_tif, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("auto", blob_tif, "--model", "classic", "--tile-size", "160", "--overlap", "32",
                                   "--quiet", "--out", out)
    assert code == 0, stderr
    assert "from 6 tile(s)" in stdout
    assert {p.name for p in out.iterdir()} == OUTPUTS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles"]["tile_size"] == 160 and summary["tiles"]["total"] == 6
    with rasterio.open(out / "labels.tif") as ds:
        assert ds.crs.to_string() == "EPSG:32633"


def test_one_line_errors_for_engine_runtime_and_tile_size(run_cli, blob_tif, tmp_path):
    # regression: --engine ray with --runtime onnx raised NameError (InputError not imported)
    code, _, stderr = run_cli("auto", blob_tif, "--model", "classic", "--engine", "ray", "--runtime", "onnx",
                              "--out", tmp_path / "o")
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and "--engine ray runs the torch runtime" in lines[0], stderr
    code, _, stderr = run_cli("auto", blob_tif, "--model", "classic", "--tile-size", "32", "--out", tmp_path / "o")
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and "--tile-size 32 is too small" in lines[0], stderr
    assert not (tmp_path / "o").exists()
    code, _, stderr = run_cli("batch", blob_tif, "--model", "classic", "--engine", "ray", "--runtime", "onnx",
                              "--out", tmp_path / "b")
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and "--engine ray runs the torch runtime" in lines[0], stderr


def test_auto_and_batch_share_option_spellings(run_cli):
    import re

    _, auto_help, _ = run_cli("auto", "--help")
    _, batch_help, _ = run_cli("batch", "--help")
    shared = ["--runtime", "--preset", "--mode", "--bands", "--min-area", "--max-area", "--tile-size", "--overlap", "--engine",
              "--address", "--workers", "--quiet", "--output-mode", "--point-grids", "--points-per-side",
              "--pred-iou-thresh", "--min-mask-region-area"]
    for opt in shared:
        assert re.search(re.escape(opt) + r"\b", auto_help) and re.search(re.escape(opt) + r"\b", batch_help), opt
    assert "--param" in batch_help


def _final_outputs(out):
    return sorted(p.name for p in out.iterdir() if p.name in OUTPUTS) if out.exists() else []


@pytest.mark.slow
def test_killed_run_leaves_no_output_under_a_final_name(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers.blobs import blob_scene, disc, rect
    from helpers.scenes import write_geotiff

    shape = (512, 640)
    objs = [rect(shape, 40 * k, 30 * k, 40 * k + 25, 30 * k + 20) for k in range(1, 12)] + [disc(shape, 320, 256, 60)]
    scene = write_geotiff(tmp_path / "s.tif", blob_scene(shape, objs))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "terramask.cli.main", "auto", str(scene), "--model", "classic", "--tile-size", "64",
           "--overlap", "16", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    staged = []
    while not staged and proc.poll() is None and time.monotonic() < deadline:
        staged = list(out.glob(".run.tmp-*/*")) if out.exists() else []
        time.sleep(0.05)
    time.sleep(0.5)  # objects are being written into the staging folder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert staged, "the run never started writing"
    assert _final_outputs(out) == []

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _final_outputs(out) == sorted(OUTPUTS)
    assert not list(out.glob(".*tmp-*")), "the killed run's staging folder was left behind"
    assert json.loads((out / "summary.json").read_text())["objects"] >= 12


@pytest.mark.parametrize("fmt", ["fgb", "parquet"])
def test_vector_format_gives_the_same_objects_in_another_file(run_cli, blob_tif, tmp_path, fmt):
    import pyogrio

    args = ["--model", "classic", "--tile-size", "160", "--overlap", "32", "-q"]
    code, _, err = run_cli("auto", blob_tif, *args, "--out", tmp_path / "gpkg")
    assert code == 0, err
    code, _, err = run_cli("auto", blob_tif, *args, "--vector-format", fmt, "--out", tmp_path / fmt)
    assert code == 0, err
    names = OUTPUTS - {"objects.gpkg"} | {f"objects.{fmt}"}
    assert {p.name for p in (tmp_path / fmt).iterdir()} == names
    summary = json.loads((tmp_path / fmt / "summary.json").read_text())
    assert f"objects.{fmt}" in summary["outputs"]
    gpkg = pyogrio.read_info(tmp_path / "gpkg" / "objects.gpkg")
    if fmt == "fgb":
        info = pyogrio.read_info(tmp_path / fmt / "objects.fgb")
        assert list(info["fields"]) == list(gpkg["fields"]) and info["features"] == gpkg["features"] > 0
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / fmt / "objects.parquet")
        assert table.column_names == [*gpkg["fields"], "geometry", "bbox"] and table.num_rows == gpkg["features"] > 0
