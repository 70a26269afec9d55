"""Overlay pictures: colours where prompts and masks are, sizes, speed on many masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from terramask.core.errors import InputError
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.io.overlay import (
    ANNOTATION_ALPHA,
    BACKGROUND_COLOR,
    BOX_COLOR,
    MASK_ALPHA,
    MASK_COLOR,
    OBJECT_COLOR,
    draw_annotations,
    draw_candidates,
    draw_prompted,
    id_colors,
    png_bytes,
    save_png,
)

GREY = 100


def _scene(h=120, w=160):
    return np.full((h, w, 3), GREY, np.uint8)


def _blend(base, color, alpha):
    return np.clip(np.float32(base) * (1 - alpha) + np.asarray(color, np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)


def _mask(h=120, w=160):
    m = np.zeros((h, w), bool)
    m[20:80, 30:110] = True
    return m


def test_prompted_overlay_colours():
    rgb = _scene()
    out = draw_prompted(rgb, _mask(), points=[[50, 40], [140, 100]], labels=[1, 0], boxes=[[5, 5, 150, 115]],
                        score_text="Score: 0.981")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (rgb == GREY).all()  # input untouched
    assert tuple(out[40, 50]) == OBJECT_COLOR  # star centre on pixel (row=y, col=x)
    assert tuple(out[100, 140]) == BACKGROUND_COLOR
    assert tuple(out[60, 90]) == tuple(_blend(GREY, MASK_COLOR, MASK_ALPHA))  # inside the mask
    assert tuple(out[100, 60]) == (GREY,) * 3  # outside everything
    assert tuple(out[60, 5]) == BOX_COLOR  # left edge of the box
    assert tuple(out[79, 70]) == (255, 255, 255)  # white contour on the mask's bottom edge
    assert (out[2:12, 2:60] != GREY).any()  # the score text box


def test_prompted_overlay_takes_prompts_and_masksets():
    rgb = _scene()
    ms = MaskSet(np.stack([_mask(), np.zeros((120, 160), bool)]), scores=[0.9, 0.1])
    prompts = Prompts(points=[[50, 40]], labels=[0], boxes=[[10, 10, 40, 30]])
    out = draw_prompted(rgb, ms, prompts)
    assert tuple(out[40, 50]) == BACKGROUND_COLOR
    assert tuple(out[20, 10]) == BOX_COLOR
    with pytest.raises(InputError, match="scene pixels"):
        draw_prompted(rgb, None, Prompts(points=[[1, 2]], labels=[1], frame="lonlat", crs="EPSG:4326"))


def test_prompted_overlay_rejects_bad_input():
    with pytest.raises(InputError, match="uint8"):
        draw_prompted(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InputError, match="do not match"):
        draw_prompted(_scene(), np.zeros((5, 5), bool))
    with pytest.raises(InputError, match="2 points but 1 labels"):
        draw_prompted(_scene(), None, [[1, 1], [2, 2]], [1])


def test_candidate_panels_side_by_side():
    rgb = _scene()
    masks = np.stack([_mask(), ~_mask(), np.zeros((120, 160), bool)])
    out = draw_candidates(rgb, MaskSet(masks, scores=[0.98, 0.5, 0.1]), points=[[10, 10]], labels=[1], gap=4)
    title = out.shape[0] - 120
    assert title > 10 and out.shape[1] == 3 * 160 + 2 * 4
    assert (out[:title] != 255).any()  # titles are written
    for k in range(3):
        panel = out[title:, k * 164 : k * 164 + 160]
        assert tuple(panel[10, 10]) == OBJECT_COLOR
        expected_inside = tuple(_blend(GREY, MASK_COLOR, MASK_ALPHA)) if k == 0 else (GREY,) * 3
        assert tuple(panel[50, 70]) == expected_inside
    assert (out[title:, 160:164] == 255).all()  # white gap
    with pytest.raises(InputError, match="3 candidate masks but 2 scores"):
        draw_candidates(rgb, masks, [0.1, 0.2])


def test_annotations_smaller_object_on_top_and_colours_by_id():
    rgb = _scene()
    big = np.zeros((120, 160), bool)
    big[10:100, 10:150] = True
    small = np.zeros_like(big)
    small[40:60, 40:60] = True
    out = draw_annotations(rgb, MaskSet(np.stack([small, big])), seed=3)
    colors = id_colors(np.array([1, 2]), seed=3)
    assert tuple(out[50, 50]) == tuple(_blend(GREY, colors[0], ANNOTATION_ALPHA))
    assert tuple(out[20, 20]) == tuple(_blend(GREY, colors[1], ANNOTATION_ALPHA))
    assert tuple(out[110, 5]) == (GREY,) * 3
    # The same picture from a label image (e.g. a window of labels.tif).
    labels = np.zeros((120, 160), np.uint32)
    labels[big] = 2
    labels[small] = 1
    np.testing.assert_array_equal(draw_annotations(rgb, labels, seed=3), out)
    bordered = draw_annotations(rgb, labels, seed=3, borders=True)
    assert tuple(bordered[50, 40]) == tuple(colors[0])
    assert tuple(bordered[50, 50]) == tuple(out[50, 50])


def test_id_colours_are_stable_and_varied():
    a = id_colors(np.arange(1, 1001))
    np.testing.assert_array_equal(a, id_colors(np.arange(1, 1001)))
    assert len({tuple(c) for c in a}) > 990
    assert not np.array_equal(a, id_colors(np.arange(1, 1001), seed=1))
    huge = id_colors(np.array([4_000_000_000]))
    assert huge.shape == (1, 3)


def test_annotations_of_thousands_of_masks_tint_exactly_their_union():
    h = w = 256
    rng = np.random.default_rng(0)
    n = 2000
    masks = np.zeros((n, h, w), bool)
    ys, xs = rng.integers(0, h - 30, n), rng.integers(0, w - 30, n)
    sizes = rng.integers(3, 30, n)
    for i in range(n):
        masks[i, ys[i] : ys[i] + sizes[i], xs[i] : xs[i] + sizes[i]] = True
    rgb = np.zeros((h, w, 3), dtype=np.uint8)  # black: every tinted pixel changes
    out = draw_annotations(rgb, MaskSet(masks))
    colors = id_colors(np.arange(1, n + 1)).astype(np.float32) * ANNOTATION_ALPHA
    visible = colors.max(axis=1) >= 1  # ids whose 35 % tint is not black
    union = masks[visible].any(axis=0)
    np.testing.assert_array_equal((out != 0).any(axis=2), union)


def test_save_png_round_trip_and_atomicity(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    path = save_png(tmp_path / "overlay.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(save_png(tmp_path / "a.png", rgba))), rgba)
    with pytest.raises(InputError, match="uint8"):
        save_png(tmp_path / "bad.png", rgb.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "overlay.png"]


def test_one_png_encoder_for_files_and_the_web(tmp_path):
    import io

    from terramask.web import render

    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for pic, mode in ((grey, "L"), (rgb, "RGB")):
        with Image.open(io.BytesIO(png_bytes(pic, compression=9))) as im:
            assert im.mode == mode
            np.testing.assert_array_equal(np.asarray(im), pic)
    assert save_png(tmp_path / "p.png", rgb).read_bytes() == png_bytes(rgb)
    assert render.png_bytes is png_bytes  # the browser's pictures use the same encoder
    with pytest.raises(InputError, match="uint8"):
        png_bytes(np.zeros((4, 4, 2), dtype=np.uint8))
