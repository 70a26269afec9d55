import numpy as np

from terramask.core.boxes import box_iou, mask_to_box, nms, xywh_to_xyxy, xyxy_to_xywh
from terramask.core.rle import (
    counts_to_string,
    mask_to_coco_rle,
    mask_to_rle,
    rle_area,
    rle_to_mask,
    string_to_counts,
)


def test_box_iou_and_conversions():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[25 / 175, 0.0]])
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(b)), b)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0]


def test_mask_to_box_is_end_inclusive_like_reference():
    m = np.zeros((2, 8, 9), bool)
    m[0, 2:5, 3:7] = True
    np.testing.assert_array_equal(mask_to_box(m), [[3, 2, 6, 4], [0, 0, 0, 0]])


def test_rle_round_trip_and_column_major_counts():
    m = np.array([[0, 1], [1, 1]], bool)
    rle = mask_to_rle(m)
    # column-major flat order: [0, 1, 1, 1] -> one zero, three ones
    assert rle == {"size": [2, 2], "counts": [1, 3]}
    starts_with_one = mask_to_rle(np.array([[1, 0]], bool))
    assert starts_with_one["counts"] == [0, 1, 1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((17, 23)) > 0.6
        for enc in (mask_to_rle(mask), mask_to_coco_rle(mask)):
            np.testing.assert_array_equal(rle_to_mask(enc), mask)
            assert rle_area(enc) == mask.sum()


def test_coco_string_round_trip_with_large_and_negative_deltas():
    counts = [0, 5, 3, 100000, 2, 1, 70000, 4]
    assert string_to_counts(counts_to_string(counts)) == counts
    # Known pycocotools encoding of counts [1, 3] ("1" encodes as chr(48+1), "3" as chr(48+3)).
    assert counts_to_string([1, 3]) == "13"
def test_per_class_nms_suppresses_only_within_a_class_and_orders_by_score():
    from terramask.core.boxes import per_class_nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.8])
    classes = np.array(["roof", "roof", "pond", "roof"], dtype=object)
    # box 1 overlaps box 0 of its class and goes; box 2 overlaps box 0 too but is a pond
    assert per_class_nms(boxes, scores, classes, 0.5).tolist() == [0, 3, 2]
    assert per_class_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []
