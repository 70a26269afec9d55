"""Streaming accumulators: hand-computed NoC, mIoU@k, recall and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.eval.metrics import mask_scores
from terramask.eval.streaming import AutoAccumulator, ClickAccumulator, MaskAccumulator, iou_after, noc


def test_noc_and_carry_forward():
    ious = [0.5, 0.86, 0.91]
    assert noc(ious, 0.85, 20) == 2
    assert noc(ious, 0.90, 20) == 3
    assert noc([0.1, 0.2], 0.9, 20) == 20  # never reached: counts max_clicks
    assert iou_after(ious, 1) == 0.5
    assert iou_after(ious, 5) == 0.91  # stopped after 3 clicks: carried forward
    with pytest.raises(InputError):
        iou_after([], 1)


def test_click_accumulator_hand_computed():
    acc = ClickAccumulator(max_clicks=5, thresholds=(0.85, 0.90), ks=(1, 3, 5))
    acc.update([0.5, 0.86, 0.91])  # NoC85 2, NoC90 3
    acc.update([0.2, 0.3, 0.4, 0.5, 0.6])  # never: 5, 5
    r = acc.compute()
    assert r["n_objects"] == 2
    assert r["noc@85"] == pytest.approx(3.5)
    assert r["noc@90"] == pytest.approx(4.0)
    assert r["nof@85"] == 1 and r["nof@90"] == 1
    assert r["miou@1"] == pytest.approx(0.35)
    assert r["miou@3"] == pytest.approx((0.91 + 0.4) / 2)
    assert r["miou@5"] == pytest.approx((0.91 + 0.6) / 2)
    assert r["miou_curve"] == pytest.approx([0.35, 0.58, 0.655, 0.705, 0.755])
    assert r["mean_clicks_used"] == 4.0
    assert sum(r["final_iou_histogram"]["counts"]) == 2
    assert "carries" in r["conventions"]["miou@k"]
    with pytest.raises(InputError):
        acc.update([0.1] * 6)  # longer than max_clicks


def test_click_accumulator_merge_equals_single_pass():
    traces = [[0.3, 0.95], [0.9], [0.1, 0.2, 0.3]]
    one = ClickAccumulator(max_clicks=3, ks=(1, 3))
    a, b = ClickAccumulator(max_clicks=3, ks=(1, 3)), ClickAccumulator(max_clicks=3, ks=(1, 3))
    for t in traces:
        one.update(t)
    a.update(traces[0])
    for t in traces[1:]:
        b.update(t)
    merged = a.merge(b).compute()
    single = one.compute()
    for k in ("noc@85", "noc@90", "miou@1", "miou@3", "nof@90"):
        assert merged[k] == pytest.approx(single[k])
    with pytest.raises(InputError):
        a.merge(ClickAccumulator(max_clicks=4))


def test_mask_accumulator_means_and_pooled_iou():
    a = np.zeros((10, 10), dtype=bool)
    a[:2] = True  # 20 px
    b = np.zeros((10, 10), dtype=bool)
    b[:1] = True  # 10 px
    acc = MaskAccumulator()
    acc.update(mask_scores(a, a))  # IoU 1, tp 20
    acc.update(mask_scores(b, a))  # IoU 0.5, tp 10, fn 10
    r = acc.compute()
    assert r["n_objects"] == 2
    assert r["mean_iou"] == pytest.approx(0.75)
    assert r["pooled_iou"] == pytest.approx(30 / 40)
    assert r["mean_precision"] == 1.0
    assert r["mean_recall"] == pytest.approx(0.75)
    counts = r["iou_histogram"]["counts"]
    assert counts[-1] == 1 and counts[10] == 1  # 1.0 in the last bin, 0.5 in [0.5, 0.55)
    assert MaskAccumulator().compute()["mean_iou"] is None


def test_auto_accumulator_hand_computed():
    acc = AutoAccumulator()
    acc.update([0.9, 0.6, 0.2], n_predicted=10, covered_px=50, labelled_px=100)
    acc.update([0.8], n_predicted=4, covered_px=30, labelled_px=40)
    r = acc.compute()
    assert r["n_objects"] == 4 and r["n_images"] == 2
    assert r["recall@0.5"] == pytest.approx(3 / 4)
    assert r["recall@0.75"] == pytest.approx(2 / 4)
    assert r["mean_best_iou"] == pytest.approx(2.5 / 4)
    assert r["predicted_per_image"] == 7.0
    assert r["coverage"] == pytest.approx(80 / 140)
    with pytest.raises(InputError):
        acc.update([0.1], 1, covered_px=5, labelled_px=4)
