"""Metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.eval.boundary import boundary_fscore, mask_boundary
from terramask.eval.metrics import (
    best_instance_ious,
    binary_target,
    confusion,
    f1_score,
    instance_ious,
    mask_iou,
    mask_scores,
    precision,
    recall,
)


def rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_confusion_and_ratios_hand_computed():
    # gt: 4x4 = 16 px at rows 0-3, cols 0-3; pred: rows 2-5, cols 0-3 = 16 px; overlap 8.
    gt = rect((10, 10), 0, 4, 0, 4)
    pred = rect((10, 10), 2, 6, 0, 4)
    c = confusion(pred, gt)
    assert (c.tp, c.fp, c.fn, c.tn) == (8, 8, 8, 76)
    assert mask_iou(pred, gt) == pytest.approx(8 / 24)
    assert precision(pred, gt) == pytest.approx(0.5)
    assert recall(pred, gt) == pytest.approx(0.5)
    assert f1_score(pred, gt) == pytest.approx(0.5)


def test_ignore_pixels_count_nowhere():
    gt = rect((10, 10), 0, 4, 0, 4)
    pred = rect((10, 10), 2, 6, 0, 4)
    ignore = rect((10, 10), 4, 6, 0, 4)  # the 8 false-positive pixels below the object
    c = confusion(pred, gt, ignore)
    assert (c.tp, c.fp, c.fn) == (8, 0, 8)
    assert c.tn == 100 - 8 - 16  # 8 ignored pixels are not negatives either
    assert mask_iou(pred, gt, ignore) == pytest.approx(0.5)
    assert precision(pred, gt, ignore) == 1.0
    # Ignoring labelled pixels removes them from the object too.
    c2 = confusion(pred, gt, rect((10, 10), 0, 2, 0, 4))
    assert (c2.tp, c2.fp, c2.fn) == (8, 8, 0)


def test_zero_denominator_convention():
    empty = np.zeros((5, 5), dtype=bool)
    full = np.ones((5, 5), dtype=bool)
    assert mask_iou(empty, empty) == 1.0
    assert f1_score(empty, empty) == 1.0
    assert mask_iou(empty, full) == 0.0
    assert precision(empty, full) == 0.0  # nothing predicted, something missed
    assert recall(full, empty) == 0.0
    # everything ignored: both empty inside the valid area
    assert mask_iou(full, full, ignore=full) == 1.0


def test_shape_checks():
    with pytest.raises(InputError, match="differs"):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="2-D"):
        mask_iou(np.zeros((2, 3, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match="ignore grid"):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((4, 4)))


def test_binary_target():
    labels = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    target, ignore = binary_target(labels, 1)
    assert target.tolist() == [[False, True, False], [False, True, False]]
    assert ignore.tolist() == [[False, False, False], [True, False, False]]


def test_mask_boundary_excludes_image_edge():
    m = rect((6, 6), 0, 3, 0, 3)  # touches the top and left image edges
    b = mask_boundary(m)
    # only the bottom row and right column of the square are contour pixels
    expected = np.zeros((6, 6), dtype=bool)
    expected[2, 0:3] = True
    expected[0:3, 2] = True
    assert (b == expected).all()
    assert not mask_boundary(np.ones((4, 4), dtype=bool)).any()


def test_boundary_f_identical_and_tolerance():
    gt = rect((40, 40), 10, 20, 10, 20)
    assert boundary_fscore(gt, gt, tolerance=0).f == 1.0
    shifted = rect((40, 40), 10, 20, 11, 21)  # one pixel to the right
    assert boundary_fscore(shifted, gt, tolerance=1).f == 1.0
    assert boundary_fscore(shifted, gt, tolerance=0).f < 1.0


def test_boundary_f_hand_computed_shift_two():
    # 10x10 square, contour = 36 px. Shifted right by 2 px, tolerance 1 px:
    # matched predicted contour pixels = top row cols 12..20 (9) + bottom row (9)
    # + left column rows 11 and 18 (2) = 20 of 36; by symmetry recall is 20/36 too.
    gt = rect((40, 40), 10, 20, 10, 20)
    pred = rect((40, 40), 10, 20, 12, 22)
    bf = boundary_fscore(pred, gt, tolerance=1)
    assert bf.precision == pytest.approx(20 / 36)
    assert bf.recall == pytest.approx(20 / 36)
    assert bf.f == pytest.approx(20 / 36)


def test_boundary_f_empty_and_ignore():
    gt = rect((20, 20), 5, 10, 5, 10)
    empty = np.zeros((20, 20), dtype=bool)
    assert boundary_fscore(empty, gt).f == 0.0
    assert boundary_fscore(empty, empty).f == 1.0
    # A false contour inside an ignored area does not hurt.
    pred = gt | rect((20, 20), 14, 18, 14, 18)
    ignore = rect((20, 20), 13, 19, 13, 19)
    assert boundary_fscore(pred, gt, tolerance=0).precision < 1.0
    assert boundary_fscore(pred, gt, ignore, tolerance=0).f == 1.0
    with pytest.raises(InputError, match="tolerance"):
        boundary_fscore(gt, gt, tolerance=-1)


def test_mask_scores_bundle():
    gt = rect((30, 30), 5, 15, 5, 15)
    pred = rect((30, 30), 5, 15, 5, 10)
    s = mask_scores(pred, gt, tolerance=2)
    assert s.iou == pytest.approx(0.5)
    assert s.precision == 1.0
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 / 3)
    assert 0 < s.boundary_f < 1
    assert s.to_dict()["tolerance"] == 2.0
    assert "confusion" not in s.to_dict()


def test_instance_ious_hand_computed():
    inst = np.zeros((10, 10), dtype=np.int32)
    inst[0:2, 0:2] = 1  # 4 px
    inst[5:10, 5:10] = 2  # 25 px
    p1 = rect((10, 10), 0, 2, 0, 4)  # covers instance 1 (4 px) + 4 px outside: IoU 0.5
    p2 = rect((10, 10), 5, 10, 5, 10)  # exactly instance 2
    ious = instance_ious(inst, np.stack([p1, p2]))
    assert ious.shape == (2, 2)
    assert ious[0, 0] == pytest.approx(0.5)
    assert ious[0, 1] == 0.0
    assert ious[1, 1] == 1.0
    assert best_instance_ious(inst, [p1, p2]).tolist() == pytest.approx([0.5, 1.0])
    # generator input is streamed, and no prediction gives zeros
    assert best_instance_ious(inst, iter([])).tolist() == [0.0, 0.0]
    # ignoring the outside part of p1 makes it a perfect match
    assert best_instance_ious(inst, [p1], ignore=rect((10, 10), 0, 2, 2, 4))[0] == 1.0
    with pytest.raises(InputError, match="grid"):
        instance_ious(inst, [np.zeros((3, 3), dtype=bool)])
