"""Training prompts: clicks inside the object (the simulator's first click among them),
background clicks near it, boxes jittered within SAM's bounds."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.blobs import rect
from terramask.core.errors import InputError
from terramask.eval.clicks import next_click
from terramask.pipelines.finetune.prompts import MAX_BOX_NOISE, jittered_box, sample_prompt


def test_clicks_are_on_the_object_or_near_it_in_the_background():
    mask = rect((60, 80), 20, 10, 50, 40)
    first = next_click(np.zeros_like(mask), mask)
    rng = np.random.default_rng(0)
    seen_first = seen_negative = 0
    for _ in range(200):
        p = sample_prompt(mask, None, "clicks", rng)
        assert p.box is None and p.labels[0] == 1 and 1 <= len(p.points) <= 3
        for (x, y), lab in zip(p.points.astype(int), p.labels, strict=True):
            assert mask[y, x] == bool(lab)
            if not lab:
                seen_negative += 1
                assert 12 <= x < 58 and 2 <= y < 48  # within the band around the object
        seen_first += tuple(p.points[0]) == (first.x, first.y)
    assert 60 < seen_first < 140 and seen_negative > 10


def test_ignored_pixels_are_never_clicked():
    mask = rect((40, 40), 5, 5, 35, 35)
    ignore = np.zeros_like(mask)
    ignore[:, :20] = True
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = sample_prompt(mask, ignore, "clicks", rng)
        assert not ignore[p.points[:, 1].astype(int), p.points[:, 0].astype(int)].any()


def test_boxes_are_jittered_within_bounds_and_inside_the_image():
    mask = rect((100, 100), 10, 20, 90, 60)
    rng = np.random.default_rng(2)
    boxes = np.array([jittered_box(mask, rng) for _ in range(300)])
    tight = np.array([10, 20, 90, 60])
    assert np.abs(boxes - tight).max() <= MAX_BOX_NOISE
    assert boxes.std(axis=0)[0] > 2 and (boxes >= 0).all() and (boxes <= 100).all()
    both = [sample_prompt(mask, None, "both", rng).box is None for _ in range(100)]
    assert 25 < sum(both) < 75


def test_unknown_kind_and_empty_object():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="--prompts"):
        sample_prompt(rect((10, 10), 1, 1, 5, 5), None, "lasso", rng)
    with pytest.raises(InputError, match="no valid pixel"):
        sample_prompt(rect((10, 10), 1, 1, 5, 5), np.ones((10, 10), bool), "clicks", rng)
