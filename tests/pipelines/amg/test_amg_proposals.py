"""Prompt reduction (``prompts="objects"``): one point per weight-free object proposal
instead of the grid finds the grid's masks with far fewer decoder prompts."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.region_scene import RegionSceneBackend, field_scene
from terramask.core.errors import InputError
from terramask.pipelines.amg.generator import generate_compact
from terramask.pipelines.amg.params import AmgParams
from terramask.pipelines.amg.proposals import crop_prompts, interior_points, object_points

THRESHOLDS = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.7}  # benchmarks/amg.py's classic case


def mask_iou(a, b) -> np.ndarray:
    """``(len(a), len(b))`` IoU of two compact mask sets on one grid."""
    x = a.masks.to_dense().reshape(len(a), -1).astype(np.float32)
    y = b.masks.to_dense().reshape(len(b), -1).astype(np.float32)
    inter = x @ y.T
    return inter / (x.sum(1)[:, None] + y.sum(1)[None, :] - inter)


@pytest.fixture(scope="module")
def scene():
    return field_scene(320, cells=5, buildings=14, seed=3)


@pytest.fixture(scope="module")
def runs(scene):
    rgb, levels = scene
    out = {}
    for prompts in ("grid", "objects"):
        backend = RegionSceneBackend(levels)
        out[prompts] = (generate_compact(backend, rgb, AmgParams(points_per_side=24, prompts=prompts, **THRESHOLDS)),
                        backend.prompts)
    return out


def test_objects_find_the_grids_masks_with_fewer_prompts(runs):
    grid, grid_prompts = runs["grid"]
    objects, object_prompts = runs["objects"]
    assert grid_prompts == 24 * 24
    assert object_prompts < grid_prompts / 2
    assert len(grid) >= 20  # real work: fields, buildings and field groups
    recall = (mask_iou(grid, objects).max(axis=1) >= 0.5).mean()
    assert recall >= 0.9


def test_object_points_lie_inside_their_regions(scene):
    rgb, levels = scene
    points = object_points(rgb, max_points=1024)
    assert points.shape[1] == 2 and 10 < len(points) < 1024
    assert np.all((points > 0) & (points < 1))
    # every building (level-0 region not a field) gets a prompt inside it
    xs = (points[:, 0] * rgb.shape[1]).astype(int)
    ys = (points[:, 1] * rgb.shape[0]).astype(int)
    hit = set(levels[0, ys, xs].tolist())
    buildings = set(np.unique(levels[0][levels[0] != levels[1]]).tolist())
    assert len(buildings & hit) >= 0.8 * len(buildings)


def test_at_most_max_points_keeps_the_largest_regions(scene):
    rgb, _ = scene
    all_points = object_points(rgb, max_points=10_000)
    few = object_points(rgb, max_points=5)
    assert len(few) == 5 < len(all_points)
    assert {tuple(p) for p in few} <= {tuple(p) for p in all_points}
    with pytest.raises(InputError, match="max_points"):
        object_points(rgb, max_points=0)


def test_interior_point_is_the_deepest_pixel():
    labels = np.zeros((20, 30), np.int32)
    labels[:, 10:] = 1
    points, areas = interior_points(labels)
    assert areas.tolist() == [200, 400]
    # the middle column of each strip (equally deep along it), away from its ends
    assert 3 <= points[0, 0] <= 7 and 4 <= points[0, 1] <= 16
    assert 17 <= points[1, 0] <= 23 and 4 <= points[1, 1] <= 16


def test_grid_mode_keeps_the_grid_and_crops_are_cut(scene):
    rgb, _ = scene
    grid = AmgParams().layer_grids()[0]
    assert crop_prompts("grid", rgb, (0, 0, 320, 320), grid) is grid
    half = crop_prompts("objects", rgb, (0, 0, 160, 320), grid)
    assert np.allclose(half, object_points(rgb[:, :160], len(grid), min_region=64))  # 32 x 32 grid: 8 x 8 cells


def test_prompts_is_validated_and_recorded():
    with pytest.raises(InputError, match="prompts must be one of grid, objects"):
        AmgParams(prompts="boxes")
    params = AmgParams.from_mapping({"prompts": "objects"})
    assert params.to_dict()["prompts"] == "objects"
    assert "prompts" not in params.reference_kwargs()
