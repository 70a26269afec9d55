"""The click simulator on synthetic shapes (fake backends; the classic engine when present)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from helpers.fake_backends import BoxFillBackend, DiscBackend
from terramask.core.errors import InputError
from terramask.eval.clicks import box_prediction, next_click, simulate_clicks, tight_box
from terramask.eval.metrics import mask_iou


def disk(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_first_click_at_deepest_interior_point():
    gt = np.zeros((30, 50), dtype=bool)
    gt[10:21, 30:41] = True  # 11x11 square, centre (x=35, y=15)
    c = next_click(np.zeros_like(gt), gt)
    assert (c.x, c.y, c.label) == (35, 15, 1)
    assert c.depth == pytest.approx(6.0)


def test_image_edge_counts_as_boundary():
    gt = np.zeros((20, 40), dtype=bool)
    gt[0:20, 0:10] = True  # touches top, bottom and left edges
    c = next_click(np.zeros_like(gt), gt)
    # 10 px wide: the deepest points are 5 px from the left image edge and the right contour
    assert c.x in (4, 5)
    assert c.depth == pytest.approx(5.0)


def test_corrective_click_labels():
    gt = np.zeros((40, 40), dtype=bool)
    gt[5:35, 5:20] = True
    # prediction spills far to the right: the deepest error is a false positive
    pred = gt.copy()
    pred[5:35, 20:38] = True
    c = next_click(pred, gt)
    assert c.label == 0 and c.x >= 20
    assert not gt[c.y, c.x]
    # prediction misses the bottom half: false negative
    pred = gt.copy()
    pred[20:35] = False
    c = next_click(pred, gt)
    assert c.label == 1 and c.y >= 20 and gt[c.y, c.x]
    assert next_click(gt, gt) is None


def test_region_rules_differ_on_thin_large_versus_compact_small_errors():
    gt = np.zeros((60, 60), dtype=bool)
    pred = np.zeros((60, 60), dtype=bool)
    gt[2:5, 0:60] = True  # missed thin strip: 180 px, depth 2
    pred[30:42, 30:42] = True  # false blob: 144 px, depth 6
    deepest = next_click(pred, gt, region="deepest")
    area = next_click(pred, gt, region="area")
    assert deepest.label == 0  # the blob is deeper
    assert area.label == 1  # the strip is larger
    with pytest.raises(InputError, match="error-region"):
        next_click(pred, gt, region="nope")


def test_clicks_avoid_ignored_pixels():
    gt = np.zeros((30, 30), dtype=bool)
    gt[5:25, 5:25] = True
    ignore = np.zeros_like(gt)
    ignore[10:20, 10:20] = True  # the middle of the object is unlabelled
    c = next_click(np.zeros_like(gt), gt, ignore)
    assert gt[c.y, c.x] and not ignore[c.y, c.x]


def test_simulator_reaches_target_and_stops_early():
    shape = (64, 64)
    gt = disk(shape, 32, 32, 14)
    image = np.zeros((*shape, 3), np.uint8)
    image[gt] = 200
    backend = DiscBackend(radius=7)
    trace = simulate_clicks(backend, backend.set_image(image), gt, max_clicks=20, stop_iou=0.9)
    assert trace.stopped == "stop_iou"
    assert trace.final_iou >= 0.9
    assert 1 < trace.n_clicks < 20
    assert len(backend.calls) == trace.n_clicks
    assert mask_iou(trace.mask, gt) == pytest.approx(trace.final_iou)
    # IoU improves overall: the last is the best so far
    assert trace.ious[-1] == max(trace.ious)
    # first click: several candidates, the best-scoring one (radius 7) kept; later: single mask
    assert backend.calls[0]["multimask"] is True
    assert all(c["multimask"] is False for c in backend.calls[1:])
    assert mask_iou(trace.first_mask, disk(shape, 32, 32, 7)) == 1.0
    # every call re-sends all earlier clicks, and the previous best logits as prior
    assert backend.calls[0]["prior"] is None
    for k, call in enumerate(backend.calls[1:], start=1):
        assert len(call["points"]) == k + 1
        assert call["prior"] is not None and call["prior"].shape == (1, *shape)
    assert (trace.points[0] == [32, 32]).all() and trace.labels[0] == 1


def test_no_prior_option_sends_no_prior_but_all_clicks():
    shape = (64, 64)
    gt = disk(shape, 32, 32, 14)
    backend = DiscBackend(radius=7)
    emb = backend.set_image(np.zeros((*shape, 3), np.uint8))
    trace = simulate_clicks(backend, emb, gt, stop_iou=None, max_clicks=6, use_prior=False)
    assert trace.n_clicks == 6 and trace.stopped == "max_clicks"
    assert all(c["prior"] is None for c in backend.calls)
    assert [len(c["points"]) for c in backend.calls] == [1, 2, 3, 4, 5, 6]


def test_simulator_max_clicks_and_validation():
    shape = (40, 40)
    gt = np.zeros(shape, dtype=bool)
    gt[0:40:2, :] = True  # stripes: a disc model can never get this right
    backend = DiscBackend(radius=3)
    emb = backend.set_image(np.zeros((*shape, 3), np.uint8))
    trace = simulate_clicks(backend, emb, gt, max_clicks=4)
    assert trace.n_clicks == 4 and trace.stopped == "max_clicks"
    with pytest.raises(InputError, match="no valid pixels"):
        simulate_clicks(backend, emb, np.zeros(shape, dtype=bool))
    with pytest.raises(InputError, match="max_clicks"):
        simulate_clicks(backend, emb, gt, max_clicks=0)
    with pytest.raises(InputError, match="multimask"):
        simulate_clicks(backend, emb, gt, multimask="sometimes")


def test_perfect_prediction_stops_without_more_clicks():
    shape = (30, 30)
    gt = disk(shape, 15, 15, 5)
    backend = DiscBackend(radius=5)
    emb = backend.set_image(np.zeros((*shape, 3), np.uint8))
    trace = simulate_clicks(backend, emb, gt, stop_iou=None, max_clicks=20, multimask="never")
    assert trace.ious == [1.0] and trace.stopped == "perfect"


def test_tight_box_and_box_prediction():
    gt = np.zeros((20, 30), dtype=bool)
    gt[4:9, 10:20] = True
    assert tight_box(gt).tolist() == [10, 4, 20, 9]
    one = np.zeros((5, 5), dtype=bool)
    one[2, 3] = True
    assert tight_box(one).tolist() == [3, 2, 4, 3]  # a 1x1 box, not degenerate
    backend = BoxFillBackend()
    pred = box_prediction(backend, backend.set_image(np.zeros((20, 30, 3), np.uint8)), gt)
    assert mask_iou(pred, gt) == 1.0
    assert backend.calls[0]["multimask"] is False
    with pytest.raises(InputError):
        tight_box(np.zeros((3, 3), dtype=bool))


def _blob_scene(touching: bool):
    """A bright roof-like disc on a vegetation-like background (noise added); with
    ``touching`` a second bright block of the same colour touches it."""
    rng = np.random.default_rng(0)
    shape = (96, 96)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = disk(shape, 40, 48, 18)
    bright = gt | ((xx >= 56) & (xx < 90) & (yy >= 38) & (yy < 58)) if touching else gt
    image = np.empty((*shape, 3), dtype=np.uint8)
    image[:] = (70, 110, 60)
    image[bright] = (200, 190, 170)
    image = np.clip(image.astype(int) + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, gt


@pytest.mark.skipif(importlib.util.find_spec("terramask.models.classic.backend") is None, reason="classic backend not available")
@pytest.mark.parametrize("touching", [False, True], ids=["isolated", "touching-a-lookalike"])
def test_classic_engine_reaches_090_on_a_blob_and_stops_early(touching):
    from terramask.models.classic.backend import ClassicBackend

    image, gt = _blob_scene(touching)
    backend = ClassicBackend()
    trace = simulate_clicks(backend, backend.set_image(image), gt, max_clicks=20, stop_iou=0.9)
    assert trace.final_iou >= 0.9
    assert trace.stopped == "stop_iou"
    assert trace.n_clicks < 20
    if touching:
        # the first click takes the look-alike too; background clicks must remove it
        assert trace.ious[0] < 0.9 and 0 in trace.labels.tolist()


class _StubbornBackend:
    """Ignores every click: always the same mask (the left half of the object)."""

    def __init__(self, mask):
        self.mask = mask

    def predict(self, embedding, prompts, multimask=True):
        from terramask.core.maskset import MaskSet

        return MaskSet(self.mask[None], np.ones(1, dtype=np.float32))


def test_a_pixel_is_never_clicked_twice():
    """RITM's clicker skips clicked pixels (not_clicked_map): when the model ignores a click,
    the next click goes to the next-deepest error pixel, not to the same one again."""
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    half = gt.copy()
    half[:, 10:] = False
    trace = simulate_clicks(_StubbornBackend(half), None, gt, max_clicks=6, stop_iou=None)
    pts = [tuple(p) for p in trace.points.tolist()]
    assert len(pts) == 6 and len(set(pts)) == 6
    assert all(label == 1 for label in trace.labels.tolist())
    assert all(gt[y, x] and not half[y, x] for x, y in pts[1:])  # all in the false-negative half
    clicked = np.zeros_like(gt)
    clicked[gt & ~half] = True
    assert next_click(half, gt, clicked=clicked) is None  # every error pixel clicked: nothing left
