"""Compact masks, windowed RLE, windowed small-region removal and NMS against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.rle import mask_to_rle, to_coco_rle
from terramask.pipelines.amg.masks import CompactMasks, window_rle_counts
from terramask.pipelines.amg.postprocess import box_near_crop_edge, nms, postprocess_small_regions, remove_small_regions


def _random_masks(rng, shape, n):
    """Masks of every kind: blobs, speckle, touching each border, full, empty, one pixel."""
    h, w = shape
    out = []
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        kind = i % 7
        if kind == 0:
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, max(h, w) / 2)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        elif kind == 1:
            m = rng.random(shape) < 0.3
        elif kind == 2:
            m = np.zeros(shape, bool)
            m[:, : rng.integers(1, w)] = True
            m[rng.integers(0, h), :] = True
        elif kind == 3:
            m = np.ones(shape, bool)
            m[rng.integers(1, h - 1), rng.integers(1, w - 1)] = False
        elif kind == 4:
            m = np.zeros(shape, bool)
        elif kind == 5:
            m = np.zeros(shape, bool)
            m[rng.integers(0, h), rng.integers(0, w)] = True
        else:
            m = np.zeros(shape, bool)
            y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
            m[y0 : y0 + rng.integers(2, 12), x0 : x0 + rng.integers(2, 12)] = True
            m[y0 + 1, x0 + 1] = False  # a one-pixel hole
        out.append(m)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(23, 31), (40, 17), (1, 9)])
def test_window_rle_equals_reference_full_grid_rle(shape):
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch

    rng = np.random.default_rng(0)
    masks = _random_masks(rng, shape, 21) if shape[0] > 2 else rng.random((5, *shape)) < 0.5
    compact = CompactMasks.from_dense(masks)
    ref = mask_to_rle_pytorch(torch.as_tensor(masks))
    for i in range(len(masks)):
        assert compact.rle(i) == ref[i] == mask_to_rle(masks[i])
        np.testing.assert_array_equal(compact.dense(i), masks[i])
        assert compact.areas[i] == masks[i].sum()
    np.testing.assert_array_equal(compact.to_dense(), masks)


def test_window_rle_counts_for_windows_on_every_border():
    rng = np.random.default_rng(1)
    shape = (12, 10)
    for y0, x0, h, w in [(0, 0, 12, 10), (0, 3, 12, 4), (2, 0, 10, 3), (5, 7, 7, 3), (0, 9, 5, 1), (11, 0, 1, 10)]:
        win = rng.random((h, w)) < 0.5
        full = np.zeros(shape, bool)
        full[y0 : y0 + h, x0 : x0 + w] = win
        assert window_rle_counts(win, x0, y0, shape) == mask_to_rle(full)["counts"]


def test_compact_masks_boxes_shift_subset_and_coco_strings():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(2)
    masks = _random_masks(rng, (30, 25), 14)
    compact = CompactMasks.from_dense(masks)
    import torch
    from segment_anything.utils.amg import batched_mask_to_box

    np.testing.assert_array_equal(compact.boxes(), batched_mask_to_box(torch.as_tensor(masks)).numpy())
    assert compact.nbytes < masks.nbytes / 4
    moved = compact.shifted(5, 7, (50, 40))
    big = np.zeros((len(masks), 50, 40), bool)
    big[:, 7:37, 5:30] = masks
    np.testing.assert_array_equal(moved.to_dense(), big)
    sub = compact.subset([3, 0])
    np.testing.assert_array_equal(sub.to_dense(), masks[[3, 0]])
    for i in range(len(masks)):
        theirs = mask_utils.frPyObjects(compact.rle(i), *masks[i].shape)
        assert to_coco_rle(compact.rle(i))["counts"] == theirs["counts"].decode()


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [3, 10, 60])
def test_windowed_small_region_removal_equals_reference(mode, area):
    from segment_anything.utils.amg import remove_small_regions as ref_remove

    rng = np.random.default_rng(3)
    shape = (36, 44)
    masks = list(_random_masks(rng, shape, 28))
    # holes that open onto the image border and masks that leave a thin strip free
    m = np.ones(shape, bool)
    m[:, :2] = False
    masks.append(m)
    m = np.zeros(shape, bool)
    m[3:20, 0:15] = True
    m[5:7, 0:3] = False
    masks.append(m)
    m = np.zeros(shape, bool)
    m[0:36, 10:20] = True
    m[10:12, 14:16] = False
    masks.append(m)
    for i, mask in enumerate(masks):
        compact = CompactMasks.from_dense(mask[None])
        origin, win = compact.window(0)
        new_origin, new_win, changed = remove_small_regions(win, origin, shape, area, mode)
        expect, expect_changed = ref_remove(mask, area, mode)
        got = np.zeros(shape, bool)
        got[new_origin[1] : new_origin[1] + new_win.shape[0], new_origin[0] : new_origin[0] + new_win.shape[1]] = new_win
        assert changed == expect_changed, i
        np.testing.assert_array_equal(got, expect, err_msg=f"mask {i}")


def test_nms_matches_torchvision_including_ties():
    import torch
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(4)
    for _trial in range(20):
        n = 60
        xy = rng.integers(0, 50, (n, 2))
        wh = rng.integers(0, 30, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float64)
        scores = rng.integers(0, 5, n).astype(np.float32)  # many ties
        thr = float(rng.choice([0.3, 0.5, 0.7, 1.0]))
        ours = nms(boxes, scores, thr)
        theirs = batched_nms(torch.as_tensor(boxes).float(), torch.as_tensor(scores), torch.zeros(n), thr).numpy()
        assert sorted(ours.tolist()) == sorted(theirs.tolist())


def test_box_near_crop_edge_matches_reference():
    import torch
    from segment_anything.utils.amg import is_box_near_crop_edge

    rng = np.random.default_rng(5)
    boxes = rng.integers(0, 300, (200, 4)).astype(np.float64)
    for crop in ([0, 0, 300, 300], [100, 50, 300, 250], [0, 120, 180, 300]):
        theirs = is_box_near_crop_edge(torch.as_tensor(boxes), crop, [0, 0, 300, 300]).numpy()
        np.testing.assert_array_equal(box_near_crop_edge(boxes, crop, [0, 0, 300, 300]), theirs)


def test_postprocess_small_regions_matches_reference():
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import MaskData, mask_to_rle_pytorch, rle_to_mask

    rng = np.random.default_rng(6)
    masks = _random_masks(rng, (32, 40), 21)
    masks = masks[masks.reshape(len(masks), -1).any(1)]
    compact = CompactMasks.from_dense(masks)
    boxes = compact.boxes()
    data = MaskData(rles=mask_to_rle_pytorch(torch.as_tensor(masks)), boxes=torch.as_tensor(boxes))
    ref = SamAutomaticMaskGenerator.postprocess_small_regions(data, 12, 0.7)
    keep, new_masks, new_boxes = postprocess_small_regions(compact, boxes, 12, 0.7)
    ours = sorted(tuple(new_masks.rle(int(i))["counts"]) for i in keep)
    theirs = sorted(tuple(r["counts"]) for r in ref["rles"])
    assert ours == theirs
    assert sorted(map(tuple, new_boxes[keep].tolist())) == sorted(map(tuple, np.asarray(ref["boxes"]).tolist()))
    assert all(rle_to_mask(r).shape == (32, 40) for r in ref["rles"])
