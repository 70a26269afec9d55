"""Issue 15: several sampling seeds with intervals, deterministic engines, report wording,
progress lines, and the example/histogram plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.fake_backends import BoxFillBackend, DiscBackend, FixedGenerator
from terramask.eval.datasets import SegmentationDataset
from terramask.pipelines.evaluate import run as run_mod
from terramask.pipelines.evaluate.examples import Example
from terramask.pipelines.evaluate.run import EvalConfig, evaluate_backend, run_evaluation


def many_objects(root: Path) -> Path:
    """Three 40x60 images, each with four 6x8 rectangles of class 1 of different widths."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in range(3):
        mask = np.zeros((40, 60), np.uint8)
        for j in range(4):
            mask[4 + 9 * j : 10 + 9 * j, 5 : 9 + 4 * j + n] = 1
        img = np.full((40, 60, 3), 30, np.uint8)
        img[mask == 1] = 220
        Image.fromarray(img).save(root / "images" / f"im{n}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{n}.png")
    return root


@pytest.fixture
def sampled(tmp_path) -> SegmentationDataset:
    return SegmentationDataset(many_objects(tmp_path / "ds"), instances_per_image=1, min_area=1)


def test_seeds_give_per_seed_means_std_and_intervals(sampled, tmp_path):
    out = tmp_path / "out"
    cfg = EvalConfig(mode="box", n_boot=300)
    backends = {"boxfill": BoxFillBackend(), "disc": DiscBackend(radius=3)}
    m = run_evaluation(sampled, ["boxfill", "disc"], cfg, out, seeds=[0, 1, 2], loader=lambda n, c: backends[n], progress=False, plots=False)
    box = m["models"]["boxfill"]
    assert box["seeds"] == [0, 1, 2] and box["n_objects"] == 9  # 3 images x 1 object x 3 seeds
    sp = box["spread"]
    assert set(sp) == {"iou", "recall", "precision"}
    assert sp["iou"]["mean"] == pytest.approx(1.0) and sp["iou"]["ci95"] == [1.0, 1.0]
    assert sp["iou"]["std"] == 0.0 and sorted(sp["iou"]["per_seed"]) == [0, 1, 2]
    disc = m["models"]["disc"]["spread"]["iou"]
    assert disc["n_objects"] == 9 and disc["ci95"][0] <= disc["mean"] <= disc["ci95"][1]
    per_seed = list(disc["per_seed"].values())
    assert disc["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert m["dataset"]["seeds"] == [0, 1, 2]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["model", "seed", "image"] and len(rows) == 1 + 2 * 9
    report = (out / "report.md").read_text()
    assert "## Spread" in report and "± " in report and "seeds 0, 1, 2" in report
    assert "| box IoU | boxfill better |" in report  # perfect boxes beat 3-px discs, intervals apart
    assert "ms / box" in report and "9 boxes)" in report
    assert box["objects_total"] == 12  # labelled objects of the 3 images, not counted once per seed


def test_sampling_differs_between_seeds(sampled):
    ids = {seed: [s.instance_ids.tolist() for s in sampled.with_seed(seed)] for seed in range(4)}
    assert len({json.dumps(v) for v in ids.values()}) > 1
    assert ids[0] == [s.instance_ids.tolist() for s in sampled.with_seed(0)]


def test_same_evaluation_twice_in_one_process_in_another_order_is_identical(rs_data, tmp_path):
    """The classic engine (GrabCut on OpenCV's global generator) on a real NAIP image,
    box mode: the second run comes after other GrabCut work and with the seeds in the
    other order, and gives the same metrics to the last digit."""
    from terramask.models.classic.backend import ClassicBackend

    ds = SegmentationDataset(rs_data / "naip_fields_agoro", limit=1, instances_per_image=2)
    cfg = EvalConfig(mode="box", n_examples=0, n_boot=200)
    first = evaluate_backend(ClassicBackend(), [ds.with_seed(0), ds.with_seed(1)], cfg, progress=False)
    evaluate_backend(ClassicBackend(), ds.with_seed(5), cfg, progress=False)  # moves OpenCV's generator
    second = evaluate_backend(ClassicBackend(), [ds.with_seed(1), ds.with_seed(0)], cfg, progress=False)
    key = lambda r: (r["seed"], r["image"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in sorted(first.rows, key=key)] == [strip(r) for r in sorted(second.rows, key=key)]
    for k in ("iou", "recall", "precision"):
        assert first.summary["spread"][k]["per_seed"] == second.summary["spread"][k]["per_seed"]
    assert first.summary["mean_iou"] == pytest.approx(second.summary["mean_iou"], abs=1e-15)


def test_auto_report_counts_images_not_prompts(tmp_path):
    root = many_objects(tmp_path / "ds")
    gen = FixedGenerator(np.zeros((1, 40, 60), bool))
    run_evaluation(SegmentationDataset(root), ["fixed"], EvalConfig(mode="auto"), tmp_path / "o", loader=lambda n, c: gen, progress=False, plots=False)
    report = (tmp_path / "o" / "report.md").read_text()
    assert "3 images generated" in report and "prompts" not in report


def test_clicks_table_says_ms_per_click(sampled, tmp_path):
    run_evaluation(sampled, ["disc"], EvalConfig(mode="clicks", max_clicks=3, miou_ks=(1, 3), noc_thresholds=(0.85, 0.9)), tmp_path / "o",
                   loader=lambda n, c: DiscBackend(radius=4), progress=False, plots=False)  # fmt: skip
    report = (tmp_path / "o" / "report.md").read_text()
    assert "ms / click" in report and "ms / prompt" not in report
    assert "RITM / SimpleClick" in report and " clicks)" in report
    spread = json.loads((tmp_path / "o" / "metrics.json").read_text())["models"]["disc"]["spread"]
    assert list(spread) == ["noc@85", "noc@90", "miou@1", "miou@3"]


def test_progress_lines_when_stderr_is_not_a_terminal(sampled, capsys, monkeypatch):
    monkeypatch.setattr(run_mod, "PROGRESS_EVERY", 2)
    evaluate_backend(BoxFillBackend(), sampled, EvalConfig(mode="box"), progress=None)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in err] == ["boxfill: 2/3 images", "boxfill: 3/3 images"]
    evaluate_backend(BoxFillBackend(), sampled, EvalConfig(mode="box"), progress=False)
    assert capsys.readouterr().err == ""


def _edge_example() -> Example:
    """A 20x30 crop whose object and box touch the right and bottom edges."""
    img = np.full((20, 30, 3), 90, np.uint8)
    gt = np.zeros((20, 30), bool)
    gt[8:, 18:] = True
    return Example("e", 0.5, "edge", img, gt, gt.copy(), np.zeros_like(gt), box=np.array([18.0, 8.0, 30.0, 20.0]))


@pytest.mark.parametrize("with_overlay", [True, False])
def test_example_panels_show_exactly_the_crop(monkeypatch, with_overlay):
    pytest.importorskip("matplotlib")
    from terramask.pipelines.evaluate import report

    if not with_overlay:  # the fallback draws the box itself in the prediction panel too
        monkeypatch.setattr(report, "_prediction_panel", lambda ex: (report._blend(ex.image, ex.pred, report.PRED_COLOUR), False))
    fig = report.examples_figure("m", [_edge_example()], [])
    axes = fig.get_axes()
    assert len(axes) == 3
    for ax in axes:
        assert ax.get_xlim() == (-0.5, 29.5)
        assert ax.get_ylim() == (19.5, -0.5)


def test_histogram_legend_covers_no_bin():
    pytest.importorskip("matplotlib")
    from terramask.pipelines.evaluate.report import histogram_figure

    counts = [9] + [0] * 18 + [9]  # most objects in the first and last bins
    summaries = [{"model": name, "h": {"edges": np.linspace(0, 1, 21).tolist(), "counts": counts}} for name in ("a-long-model-name", "b")]
    fig = histogram_figure(summaries, [("h", "IoU")])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.get_axes()[0]
    legend = ax.get_legend().get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    assert legend.x0 >= axes_box.x1  # beside the axes: no bin underneath
