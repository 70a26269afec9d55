"""`terramask eval` end to end on real labelled sets of ../shared/data/rs/ (CI-sized:
a couple of images, one or two objects each, short click budgets)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from terramask.cli.main import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def assert_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100


@pytest.mark.slow
def test_clicks_on_gsi_solar_png_set(rs_data, tmp_path, capsys):
    out = tmp_path / "solar"
    code, stdout, err = run(
        capsys,
        "eval", rs_data / "gsi_solar", "--model", "classic", "--mode", "clicks",
        "--limit", 2, "--instances-per-image", 1, "--max-clicks", 5, "--out", out, "-q",
    )  # fmt: skip
    assert code == 0, err
    m = read_metrics(out)
    s = m["models"]["classic"]
    assert m["dataset"]["images"] == 2 and m["dataset"]["images_available"] == 36
    assert m["config"]["max_clicks"] == 5
    assert s["n_objects"] == 2
    assert 1 <= s["noc@85"] <= s["noc@90"] <= 5
    for k in (1, 3, 5):
        assert 0.0 <= s[f"miou@{k}"] <= 1.0
    assert len(s["miou_curve"]) == 5 and s["miou_curve"][4] == s["miou@5"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["model"] for r in rows] == ["classic", "classic"] and {r["n_objects"] for r in rows} == {"1"}
    report = (out / "report.md").read_text()
    assert "| classic |" in report and "NoC@90" in report
    for png in ("miou_vs_clicks.png", "iou_histograms.png", "examples_classic.png"):
        assert_png(out / "plots" / png)
    assert "| classic |" in stdout


@pytest.mark.slow
def test_box_and_auto_on_spacenet_geotiffs_with_instance_masks(rs_data, tmp_path, capsys):
    ds = rs_data / "spacenet_atlanta_buildings"
    code, _, err = run(capsys, "eval", ds, "--model", "classic", "--mode", "box", "--limit", 2, "--out", tmp_path / "box", "-q")
    assert code == 0, err
    box = read_metrics(tmp_path / "box")
    s = box["models"]["classic"]
    assert box["dataset"]["instance_source"] == "masks_instance"
    # atlanta_r0_c0 and atlanta_r2_c2 hold 7 + 5 buildings (index.csv); none under 16 px
    assert s["objects_total"] == 12 and s["n_objects"] == 12 - s["objects_below_min_area"]
    assert 0.0 < s["mean_iou"] <= 1.0 and 0.0 <= s["mean_boundary_f"] <= 1.0
    assert s["prompts"] == s["n_objects"]  # one box per object

    code, _, err = run(capsys, "eval", ds, "--model", "classic", "--mode", "auto", "--limit", 2, "--no-plots", "--out", tmp_path / "auto", "-q")
    assert code == 0, err
    a = read_metrics(tmp_path / "auto")["models"]["classic"]
    assert a["n_images"] == 2 and a["n_objects"] == s["n_objects"]
    assert 0.0 <= a["recall@0.75"] <= a["recall@0.5"] <= 1.0
    assert a["n_predicted"] > 0 and 0.0 <= a["coverage"] <= 1.0
    assert not (tmp_path / "auto" / "plots").exists()
    assert "recall@0.5" in (tmp_path / "auto" / "report.md").read_text()


@pytest.mark.slow
def test_two_models_give_one_table_and_one_curve_each(rs_data, tmp_path, capsys):
    pytest.importorskip("segment_anything")
    from helpers.tiny_sam import write_sam_checkpoint

    ckpt = write_sam_checkpoint(tmp_path / "tiny.pth", arch="tiny")
    out = tmp_path / "cmp"
    code, stdout, err = run(
        capsys,
        "eval", rs_data / "spacenet_atlanta_buildings", "--model", "classic", "--model", "tiny-sam",
        "--checkpoint", f"tiny-sam={ckpt}", "--mode", "clicks", "--limit", 1, "--instances-per-image", 1,
        "--max-clicks", 2, "--out", out, "-q",
    )  # fmt: skip
    assert code == 0, err
    m = read_metrics(out)
    assert list(m["models"]) == ["classic", "tiny-sam"]
    assert all(len(s["miou_curve"]) == 2 for s in m["models"].values())
    report = (out / "report.md").read_text()
    # one row in the comparison table and one in the spread table
    assert report.count("| classic |") == 2 and report.count("| tiny-sam |") == 2
    assert "| mIoU@1 | " in report  # the pairwise overlap table
    assert_png(out / "plots" / "miou_vs_clicks.png")
    assert_png(out / "plots" / "examples_tiny-sam.png")


def test_errors_are_one_line(rs_data, tmp_path, capsys):
    code, _, err = run(capsys, "eval", tmp_path / "missing", "--model", "classic", "--out", tmp_path / "o")
    assert code == 2 and "dataset folder does not exist" in err and err.count("\n") == 1
    code, _, err = run(capsys, "eval", rs_data / "gsi_solar", "--model", "classic", "--stop-iou", 0.5, "--out", tmp_path / "o")
    assert code == 2 and "stop IoU" in err
    code, _, err = run(
        capsys, "eval", rs_data / "gsi_solar", "--model", "classic", "--model", "sam-vit-b", "--checkpoint", "x.pth", "--out", tmp_path / "o"
    )
    assert code == 2 and "MODEL=PATH" in err
    code, _, err = run(capsys, "eval", rs_data / "gsi_solar", "--model", "no-such-model", "--limit", 1, "--out", tmp_path / "o")
    assert code != 0 and "no-such-model" in err
    code, _, err = run(capsys, "eval", rs_data / "gsi_solar", "--model", "classic", "--auto-param", "oops", "--out", tmp_path / "o")
    assert code == 2 and "KEY=VALUE" in err


def test_auto_params_reach_the_generator(rs_data, tmp_path, capsys):
    code, _, err = run(
        capsys, "eval", rs_data / "spacenet_atlanta_buildings", "--model", "classic", "--mode", "auto", "--limit", 1,
        "--auto-param", "max_regions=3", "--no-plots", "--out", tmp_path / "a", "-q",
    )  # fmt: skip
    assert code == 0, err
    m = read_metrics(tmp_path / "a")
    assert m["config"]["auto_params"] == {"max_regions": 3}
    assert m["models"]["classic"]["n_predicted"] <= 3
    code, _, err = run(
        capsys, "eval", rs_data / "spacenet_atlanta_buildings", "--model", "classic", "--mode", "auto", "--limit", 1,
        "--auto-param", "no_such_param=1", "--no-plots", "--out", tmp_path / "b", "-q",
    )  # fmt: skip
    assert code == 2 and "no_such_param" in err


def _two_class_set(root: Path) -> Path:
    """Two 32x40 PNG images, uint8 class masks holding 0 (background), 1 (a 6x6 and a
    10x12 square) and 255 (ignored)."""
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("a", "b"):
        mask = np.zeros((32, 40), np.uint8)
        mask[4:10, 4:10] = 1
        mask[15:25, 20:32] = 1
        mask[30:, :] = 255
        img = np.full((32, 40, 3), 40, np.uint8)
        img[mask == 1] = 200
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--class", 9), "class 9 has no object in the 2 mask(s) of"),
        (("--class", 300), "class 300 cannot occur in a.png: its uint8 values are 0..255"),
        (("--min-area", 500), "all 4 object(s) of class 1 in the 2 mask(s) of"),
    ],
)
def test_a_class_that_gives_no_object_is_one_line_and_no_report(tmp_path, capsys, args, message):
    ds = _two_class_set(tmp_path / "ds")
    out = tmp_path / "o"
    code, _, err = run(capsys, "eval", ds, "--model", "classic", *args, "--out", out, "-q")
    assert code != 0
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_min_area_message_names_the_largest_object(tmp_path, capsys):
    ds = _two_class_set(tmp_path / "ds")
    _, _, err = run(capsys, "eval", ds, "--model", "classic", "--min-area", 500, "--out", tmp_path / "o", "-q")
    assert "smaller than the minimum area of 500 px (largest: 120 px); lower --min-area" in err


def test_seeds_on_the_command_line(tmp_path, capsys):
    ds = _two_class_set(tmp_path / "ds")
    out = tmp_path / "o"
    code, stdout, err = run(
        capsys, "eval", ds, "--model", "classic", "--mode", "box", "--instances-per-image", 1,
        "--seed", 4, "--seeds", 3, "--no-plots", "--out", out, "-q",
    )  # fmt: skip
    assert code == 0, err
    m = read_metrics(out)
    s = m["models"]["classic"]
    assert m["dataset"]["seeds"] == [4, 5, 6] and s["seeds"] == [4, 5, 6]
    assert s["n_objects"] == 6 and set(s["spread"]["iou"]["per_seed"]) == {"4", "5", "6"}
    lo, hi = s["spread"]["iou"]["ci95"]
    assert lo <= s["spread"]["iou"]["mean"] <= hi
    assert "| classic | 4, 5, 6 |" in stdout and "| classic | 4, 5, 6 |" in (out / "report.md").read_text()
