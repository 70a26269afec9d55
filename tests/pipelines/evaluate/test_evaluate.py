"""The evaluation pipeline with fake backends on a tiny synthetic dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.fake_backends import BoxFillBackend, DiscBackend, FixedGenerator
from terramask.core.errors import InputError
from terramask.eval.datasets import SegmentationDataset
from terramask.pipelines.evaluate.run import (
    EvalConfig,
    ExampleKeeper,
    evaluate_backend,
    iter_predicted_masks,
    run_evaluation,
)


def make_dataset(root: Path) -> Path:
    """Two 48x64 images: bright rectangles (class 1) on a dark background, one ignored strip."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rects = {"img_a": [(4, 14, 4, 20), (25, 40, 30, 50)], "img_b": [(10, 30, 10, 30)]}
    for stem, boxes in rects.items():
        mask = np.zeros((48, 64), np.uint8)
        for y0, y1, x0, x1 in boxes:
            mask[y0:y1, x0:x1] = 1
        mask[44:48, :] = 255
        img = np.full((48, 64, 3), 40, np.uint8)
        img[mask == 1] = 210
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


@pytest.fixture
def dataset(tmp_path) -> SegmentationDataset:
    return SegmentationDataset(make_dataset(tmp_path / "ds"))


def test_clicks_mode_summary_rows_and_examples(dataset):
    backend = DiscBackend(radius=6)
    res = evaluate_backend(backend, dataset, EvalConfig(mode="clicks", n_examples=1), progress=False)
    s = res.summary
    assert s["n_objects"] == 3 and s["images"] == 2
    assert backend.images == 2  # one embedding per image, not per object
    assert s["noc@90"] <= 20 and s["noc@85"] <= s["noc@90"]
    assert s["miou@1"] <= s["miou@3"] <= s["miou@5"]
    assert len(s["miou_curve"]) == 20
    assert s["final_mask"]["n_objects"] == 3
    assert [r["image"] for r in res.rows] == ["img_a", "img_b"]
    assert res.rows[0]["n_objects"] == 2 and "noc@90" in res.rows[0]
    assert s["prompts"] == sum(
        round(r["clicks"] * r["n_objects"]) for r in res.rows
    )  # every click is one predict call
    assert len(res.best) == 1 and len(res.worst) == 1
    assert res.best[0].score >= res.worst[0].score
    assert res.best[0].points.shape == (1, 2)


def test_box_mode_perfect_on_rectangles(dataset):
    res = evaluate_backend(BoxFillBackend(), dataset, EvalConfig(mode="box"), progress=False)
    s = res.summary
    assert s["n_objects"] == 3
    assert s["mean_iou"] == pytest.approx(1.0)
    assert s["mean_boundary_f"] == pytest.approx(1.0)
    assert res.rows[0]["iou"] == pytest.approx(1.0)


def test_auto_mode_best_iou_recall_and_coverage(dataset):
    # One mask equal to img_a's first rectangle, one covering half of the second.
    masks = np.zeros((2, 48, 64), dtype=bool)
    masks[0, 4:14, 4:20] = True
    masks[1, 25:40, 30:40] = True
    gen = FixedGenerator(masks)
    res = evaluate_backend(gen, dataset, EvalConfig(mode="auto", auto_params={"superpixels": 4}), progress=False)
    s = res.summary
    assert gen.calls[0]["params"] == {"superpixels": 4}  # the generator's own option reaches it
    # img_a: best IoUs 1.0 and 0.5; img_b (rect 10:30, 10:30): mask 0 overlaps rows 10-13, cols 10-19
    inter = 4 * 10
    iou_b = inter / (160 + 400 - inter)
    assert s["n_objects"] == 3
    assert s["recall@0.5"] == pytest.approx(2 / 3)
    assert s["recall@0.75"] == pytest.approx(1 / 3)
    assert s["mean_best_iou"] == pytest.approx((1.0 + 0.5 + iou_b) / 3)
    assert s["predicted_per_image"] == 2.0
    assert s["coverage"] == pytest.approx((160 + 150 + inter) / (160 + 300 + 400))
    assert res.rows[0]["n_predicted"] == 2


def test_iter_predicted_masks_accepts_records_and_rle():
    from terramask.core.rle import mask_to_coco_rle

    m = np.zeros((6, 7), dtype=bool)
    m[1:3, 2:5] = True
    out = list(iter_predicted_masks([{"segmentation": mask_to_coco_rle(m)}, {"segmentation": m}], m.shape))
    assert len(out) == 2 and all((o == m).all() for o in out)
    assert len(list(iter_predicted_masks(np.stack([m, m]), m.shape))) == 2


def test_config_validation():
    with pytest.raises(InputError, match="mode"):
        EvalConfig(mode="everything")
    with pytest.raises(InputError, match="stop IoU"):
        EvalConfig(stop_iou=0.8)
    with pytest.raises(InputError, match="mIoU@5"):
        EvalConfig(max_clicks=3)
    with pytest.raises(InputError, match="tolerance"):
        EvalConfig(boundary_tolerance=-1)


def test_example_keeper_keeps_extremes():
    k = ExampleKeeper(2)
    for v in [0.5, 0.1, 0.9, 0.3, 0.95, 0.7]:
        k.add(v, lambda v=v: v)
    assert k.best == [0.95, 0.9]
    assert k.worst == [0.1, 0.3]


@pytest.mark.slow  # matplotlib figures: a few seconds on a loaded machine
def test_run_evaluation_writes_outputs_for_two_models(dataset, tmp_path):
    backends = {"disc": DiscBackend(radius=6), "disc-small": DiscBackend(radius=3)}
    out = tmp_path / "out"
    metrics = run_evaluation(
        dataset,
        ["disc", "disc-small"],
        EvalConfig(mode="clicks", n_examples=1),
        out,
        loader=lambda name, ckpt: backends[name],
        progress=False,
    )
    assert set(metrics["models"]) == {"disc", "disc-small"}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["models"]["disc"]["noc@90"] == pytest.approx(metrics["models"]["disc"]["noc@90"])
    assert on_disk["dataset"]["images"] == 2 and on_disk["config"]["mode"] == "clicks"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"disc", "disc-small"}
    report = (out / "report.md").read_text()
    assert "| disc |" in report and "| disc-small |" in report
    for png in ("plots/miou_vs_clicks.png", "plots/iou_histograms.png", "plots/examples_disc.png", "plots/examples_disc-small.png"):
        assert f"]({png})" in report
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 100
    assert not list(out.glob(".*tmp-*")) and not list((out / "plots").glob(".*tmp-*"))


def test_run_evaluation_argument_errors(dataset, tmp_path):
    with pytest.raises(InputError, match="at least one"):
        run_evaluation(dataset, [], EvalConfig(), tmp_path / "o")
    with pytest.raises(InputError, match="twice"):
        run_evaluation(dataset, ["a", "a"], EvalConfig(), tmp_path / "o")
    with pytest.raises(InputError, match="not evaluated"):
        run_evaluation(dataset, ["a"], EvalConfig(), tmp_path / "o", checkpoints={"b": "x.pth"})


@pytest.mark.slow
def test_auto_mode_through_amg_with_a_tiny_random_sam(dataset, tmp_path):
    pytest.importorskip("segment_anything")
    from helpers.tiny_sam import write_sam_checkpoint
    from terramask.pipelines.evaluate.run import generate_masks, load_model

    backend = load_model("tiny-sam", str(write_sam_checkpoint(tmp_path / "tiny.pth", arch="tiny")))
    params = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    one = SegmentationDataset(dataset.root, limit=1)  # img_a: two objects
    res = evaluate_backend(backend, one, EvalConfig(mode="auto", auto_params=params), progress=False)
    s = res.summary
    assert s["n_images"] == 1 and s["n_objects"] == 2
    assert s["n_predicted"] == sum(r["n_predicted"] for r in res.rows) > 0
    assert 0.0 <= s["recall@0.5"] <= 1.0 and 0.0 <= s["mean_best_iou"] <= 1.0
    # a preset name and overrides reach the generator; a bad parameter is an input error
    image = next(iter(dataset)).image
    out = generate_masks(backend, image, {"preset": "default", "points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    assert len(list(iter_predicted_masks(out, image.shape[:2]))) == len(out)
    with pytest.raises(InputError):
        generate_masks(backend, image, {"points_per_side": -1})


def test_auto_params_per_model(dataset, tmp_path):
    cfg = EvalConfig(mode="auto", auto_params={"a": 1, "gen-b:a": 2, "gen-b:c": 3, "other:z": 0})
    assert cfg.auto_params_for("gen-a") == {"a": 1}
    assert cfg.auto_params_for("gen-b") == {"a": 2, "c": 3}
    masks = np.zeros((1, 48, 64), dtype=bool)
    gens = {"gen-a": FixedGenerator(masks), "gen-b": FixedGenerator(masks)}
    with pytest.raises(InputError, match="other"):
        run_evaluation(dataset, ["gen-a", "gen-b"], cfg, tmp_path / "o", loader=lambda n, c: gens[n], progress=False, plots=False)
    cfg = EvalConfig(mode="auto", auto_params={"a": 1, "gen-b:a": 2})
    m = run_evaluation(dataset, ["gen-a", "gen-b"], cfg, tmp_path / "o", loader=lambda n, c: gens[n], progress=False, plots=False)
    assert gens["gen-a"].calls[0]["params"] == {"a": 1} and gens["gen-b"].calls[0]["params"] == {"a": 2}
    assert m["models"]["gen-b"]["auto_params"] == {"a": 2}
