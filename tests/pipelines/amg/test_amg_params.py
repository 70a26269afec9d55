"""Automatic-generation parameters: reference names and defaults, validation, grids, crops, presets."""

from __future__ import annotations

import inspect
import time

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.pipelines.amg.params import (
    EXTENSIONS,
    AmgParams,
    build_all_layer_point_grids,
    check_mode,
    generate_crop_boxes,
)
from terramask.pipelines.amg.presets import PRESETS, get_preset, resolve_params


def _reference_defaults() -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    sig = inspect.signature(SamAutomaticMaskGenerator.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "model")}


def test_every_reference_parameter_with_the_reference_default():
    ref = _reference_defaults()
    ours = AmgParams()
    assert set(ref) == set(AmgParams.names()) - set(EXTENSIONS)
    assert set(AmgParams().reference_kwargs()) == set(ref)
    for name, default in ref.items():
        assert getattr(ours, name) == default, name


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_side": -4}, "points_per_side"),
        ({"points_per_side": 2.5}, "points_per_side"),
        ({"points_per_side": True}, "points_per_side"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
        ({"pred_iou_thresh": -0.1}, "pred_iou_thresh"),
        ({"stability_score_thresh": 2}, "stability_score_thresh"),
        ({"stability_score_thresh": float("nan")}, "stability_score_thresh"),
        ({"box_nms_thresh": -1}, "box_nms_thresh"),
        ({"crop_nms_thresh": 1.01}, "crop_nms_thresh"),
        ({"stability_score_offset": -1}, "stability_score_offset"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
        ({"min_mask_region_area": -5}, "min_mask_region_area"),
        ({"output_mode": "png"}, "output_mode"),
        ({"points_per_side": 4, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2}, "zero points in crop layer 3"),
    ],
)
def test_bad_values_raise_input_error_naming_the_parameter(kwargs, words):
    with pytest.raises(InputError, match=words):
        AmgParams(**kwargs)


def test_points_per_side_and_point_grids_are_exclusive():
    grid = np.array([[0.5, 0.5]])
    with pytest.raises(InputError, match="exactly one"):
        AmgParams(points_per_side=8, point_grids=[grid])
    with pytest.raises(InputError, match="exactly one"):
        AmgParams(points_per_side=None)
    p = AmgParams(points_per_side=None, point_grids=[grid])
    assert len(p.layer_grids()) == 1 and p.layer_grids()[0].tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize(
    "grids, words",
    [
        ([np.zeros((0, 2))], "zero points"),
        ([np.array([[0.5, 1.5]])], r"\[0, 1\]"),
        ([np.array([0.5, 0.5])], r"shape \(N, 2\)"),
        (np.array([[0.5, 0.5]]), "list of"),
    ],
)
def test_bad_point_grids(grids, words):
    with pytest.raises(InputError, match=words):
        AmgParams(points_per_side=None, point_grids=grids)


def test_point_grids_must_cover_every_crop_layer():
    with pytest.raises(InputError, match="one per layer"):
        AmgParams(points_per_side=None, point_grids=[np.array([[0.5, 0.5]])], crop_n_layers=1)


def test_grids_and_crop_boxes_equal_the_reference():
    from segment_anything.utils import amg as ref

    for n, layers, scale in [(32, 0, 1), (64, 1, 2), (7, 2, 2), (5, 1, 1)]:
        ours = build_all_layer_point_grids(n, layers, scale)
        theirs = ref.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    for size, layers, ratio in [((1024, 1024), 1, 512 / 1500), ((300, 517), 2, 0.25), ((64, 40), 1, 0.0)]:
        assert generate_crop_boxes(size, layers, ratio) == ref.generate_crop_boxes(size, layers, ratio)


def test_from_mapping_overrides_and_rejects_unknown_names():
    p = AmgParams.from_mapping({"points_per_side": 64}, pred_iou_thresh=0.5, stability_score_thresh=None)
    assert (p.points_per_side, p.pred_iou_thresh, p.stability_score_thresh) == (64, 0.5, 0.95)
    with pytest.raises(InputError, match="unknown automatic-mask parameter"):
        AmgParams.from_mapping({}, points_per_sid=3)
    grid = [np.array([[0.1, 0.2]])]
    p = AmgParams.from_mapping({"points_per_side": 64}, point_grids=grid, points_per_side=None)
    assert p.points_per_side is None and p.layer_grids()[0].shape == (1, 2)
    assert p.to_dict()["point_grids"] == [[[0.1, 0.2]]]


def test_presets():
    assert resolve_params("default") == AmgParams()
    small = resolve_params("small-objects")
    # the reference notebook's remote-sensing tuning
    assert (small.points_per_side, small.pred_iou_thresh, small.stability_score_thresh) == (64, 0.8, 0.9)
    assert (small.crop_n_layers, small.crop_n_points_downscale_factor, small.min_mask_region_area) == (1, 2, 10)
    assert resolve_params("small_objects", pred_iou_thresh=0.7).pred_iou_thresh == 0.7
    assert resolve_params("quick").points_per_side == 16
    assert get_preset("Quick").name == "quick"
    assert set(PRESETS) >= {"default", "small-objects", "quick"}
    with pytest.raises(InputError, match="unknown preset"):
        resolve_params("tiny-things")


def test_modes():
    assert check_mode("fast") == "fast" and check_mode("exact") == "exact"
    with pytest.raises(InputError, match="mode"):
        check_mode("quick")


# -- upper bounds (issue 16) ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"points_per_side": 100000}, "points_per_side=100000 means 1e10 prompts per crop"),
        ({"points_per_side": 257}, "66,049 prompts per crop"),
        ({"crop_n_layers": 50}, "crop_n_layers=50 means"),
        ({"crop_n_layers": 4}, "341 crops"),
        ({"points_per_batch": 5000}, "62.9 GB of mask logits per batch"),
        ({"points_per_side": 256, "crop_n_layers": 3}, "5,570,560 prompts over 85 crops"),
        ({"points_per_side": None, "point_grids": [np.full((70000, 2), 0.5)]}, "70,000 points"),
    ],
)
def test_costly_values_are_refused_with_the_estimate(kwargs, words):
    with pytest.raises(InputError) as err:
        AmgParams(**kwargs)
    message = str(err.value)
    assert words in message, message
    assert "the most is" in message or "more than the" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points_per_side": 256},  # the largest grid, alone
        {"points_per_side": 128, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2},
        {"points_per_side": 64, "crop_n_layers": 3},
        {"points_per_batch": 256},
        {"stability_score_offset": 1e6, "min_mask_region_area": 10**9},  # cost nothing more when large
    ],
)
def test_values_up_to_the_bounds_are_accepted(kwargs):
    params = AmgParams(**kwargs)
    assert sum(len(g) * 4**i for i, g in enumerate(params.layer_grids())) <= 2**20


def test_reference_defaults_and_every_preset_are_within_the_bounds():
    for name in PRESETS:
        params = resolve_params(name)
        assert params.points_per_side <= 256 and params.crop_n_layers <= 3 and params.points_per_batch <= 256


def _auto_cli(tmp_path, capsys, *options):
    from helpers.scenes import blob_scene, write_geotiff
    from terramask.cli.main import main

    scene = write_geotiff(tmp_path / "blob.tif", blob_scene(), nodata=0)
    out = tmp_path / "out"
    code = main(["auto", str(scene), "--model", "classic", "--out", str(out), *options])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize(
    "options, words",
    [
        (["--points-per-side", "100000"], "1e10 prompts per crop"),
        (["--crop-n-layers", "50"], "crop_n_layers=50 means"),
        (["--points-per-batch", "100000"], "of mask logits per batch"),
    ],
)
def test_auto_cli_refuses_costly_parameters_in_one_line(tmp_path, capsys, options, words):
    started = time.monotonic()
    code, err, out = _auto_cli(tmp_path, capsys, *options)
    assert code != 0 and time.monotonic() - started < 30
    lines = [line for line in err.strip().splitlines() if line.startswith("terramask: error")]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_area_options_are_matched_in_full():
    from terramask.pipelines.amg.filters import parse_area

    assert parse_area(" 20m2\n").value == 20.0  # surrounding blanks are fine
    assert parse_area("5ha").value == 50000.0
    for bad in ("20m2\nrm -rf", "20 m2 x", "m2", "20m2;", "x20"):
        with pytest.raises(InputError, match="--min-area"):
            parse_area(bad)
