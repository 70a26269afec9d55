"""``terramask auto --prompts objects``: prompt reduction from the command line, recorded
in summary.json, same on the Ray path's parameter dict; a bad value is one clear line."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_objects_prompts_from_the_command_line(run_cli, rs_data, tmp_path):
    from helpers.tiny_sam import write_sam_checkpoint

    ckpt = write_sam_checkpoint(tmp_path / "tiny.pth", arch="tiny")
    scene = rs_data / "geotiffs" / "solaris_ms1_uint16.tif"
    common = ["--checkpoint", ckpt, "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet"]
    summaries = {}
    for prompts in ("grid", "objects"):
        out = tmp_path / prompts
        code, _, stderr = run_cli("auto", scene, *common, "--prompts", prompts, "--out", out)
        assert code == 0, stderr
        summaries[prompts] = json.loads((out / "summary.json").read_text())
    assert summaries["objects"]["parameters"]["prompts"] == "objects"
    assert summaries["grid"]["parameters"]["prompts"] == "grid"
    assert summaries["objects"]["objects"] > 0  # thresholds 0: every proposal leaves candidates


def test_bad_prompts_value_is_one_line(run_cli, blob_tif, tmp_path):
    code, _, stderr = run_cli("auto", blob_tif, "--prompts", "boxes", "--out", tmp_path / "o")
    assert code == 2 and "boxes" in stderr and "Traceback" not in stderr


def test_ray_segmenter_carries_prompts():
    from terramask.pipelines.scene.segmenters import _amg_params

    assert _amg_params({"prompts": "objects", "points_per_side": 8}).prompts == "objects"
