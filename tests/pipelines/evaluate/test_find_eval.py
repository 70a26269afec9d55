"""eval --mode find: one-to-one matching, AP50, and a run of find-similar with labelled
exemplars on a generated dataset (red objects are the class, blue ones are distractors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers.feature_backends import ColourFeatureBackend, colour_scene
from terramask.core.errors import InputError
from terramask.eval.datasets import SegmentationDataset
from terramask.pipelines.evaluate.config import EvalConfig
from terramask.pipelines.evaluate.find import FindAccumulator, average_precision, match_instances
from terramask.pipelines.evaluate.run import run_evaluation

RED = [[(16, 16, 56, 48), (120, 24, 168, 64), (40, 160, 88, 200)],
       [(20, 120, 60, 160), (150, 150, 200, 190), (180, 20, 230, 60), (60, 20, 100, 60)]]
BLUE = [[(96, 96, 144, 136)], [(100, 100, 140, 130)]]


def test_greedy_matching_is_one_to_one_by_score():
    ious = np.array([[0.9, 0.1], [0.8, 0.6], [0.55, 0.0]])
    matched, iou = match_instances(ious, np.array([0.5, 0.9, 0.7]))
    # prediction 1 (best score) takes object 0; prediction 2 finds it taken; prediction 0 finds nothing >= 0.5 left
    assert matched.tolist() == [-1, 0, -1] and iou.tolist() == [0.0, 0.8, 0.0]
    matched, _ = match_instances(ious, np.array([0.9, 0.5, 0.1]))
    assert matched.tolist() == [0, 1, -1]


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    # ranks: TP, FP, TP over 2 objects: 0.5 * 1 + 0.5 * 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert average_precision(np.zeros(0), np.zeros(0, bool), 0) is None
    acc = FindAccumulator()
    acc.update(np.array([0, -1]), np.array([0.8, 0.0]), np.array([0.9, 0.5]), 2)
    out = acc.compute()
    assert out["precision@0.5"] == 0.5 and out["recall@0.5"] == 0.5 and out["f1@0.5"] == 0.5
    assert out["mean_matched_iou"] == pytest.approx(0.8) and out["ap50"] == pytest.approx(0.5)


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (red, blue) in enumerate(zip(RED, BLUE, strict=True)):
        img, red_masks, blue_masks = colour_scene(256, red, blue, seed=k)
        labels = np.zeros((256, 256), np.uint8)
        for m in red_masks:
            labels[m] = 1
        for m in blue_masks:
            labels[m] = 2
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
        Image.fromarray(labels).save(root / "masks" / f"im{k}.png")
    return root


def test_find_similar_with_labelled_exemplars(dataset, tmp_path):
    ds = SegmentationDataset(dataset, 1)
    config = EvalConfig(mode="find", exemplars_per_image=1, n_examples=1)
    metrics = run_evaluation(ds, ["colour"], config, tmp_path / "out", loader=lambda name, ckpt: ColourFeatureBackend(),
                             plots=False)
    s = metrics["models"]["colour"]
    assert s["n_images"] == 2 and s["n_objects"] == 2 + 3  # one exemplar per image is not scored
    assert s["precision@0.5"] == 1.0 and s["recall@0.5"] == 1.0 and s["ap50"] == pytest.approx(1.0)
    assert s["mean_matched_iou"] > 0.9
    report = (tmp_path / "out" / "report.md").read_text()
    assert "AP50" in report and "find-similar: 1 labelled object(s) per image" in report
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["config"]["exemplars_per_image"] == 1


def test_find_mode_needs_one_way_to_say_what():
    with pytest.raises(InputError, match="one of them"):
        EvalConfig(mode="find")
    with pytest.raises(InputError, match="one of them"):
        EvalConfig(mode="find", find_text=("building",), exemplars_per_image=2)
    with pytest.raises(InputError, match="only apply to --mode find"):
        EvalConfig(mode="auto", exemplars_per_image=2)
