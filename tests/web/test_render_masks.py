"""The 1-bit candidate PNGs the page draws as they are (terramask.web.mask_png)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from terramask.core.errors import InputError
from terramask.web.mask_png import bilevel_png, boundary


def _rgba(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode == "P"
        return np.asarray(im.convert("RGBA"))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 8), (9, 17), (64, 33)])
def test_bilevel_png_is_the_mask_in_its_colour_and_transparent_elsewhere(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.4
    rgba = _rgba(bilevel_png(mask, (30, 144, 255)))
    assert rgba.shape == (*shape, 4)
    np.testing.assert_array_equal(rgba[..., 3] == 255, mask)
    assert (rgba[..., 3][~mask] == 0).all()
    assert (rgba[mask][:, :3] == (30, 144, 255)).all()


def test_bilevel_png_is_small_for_a_speckled_mask():
    """A candidate speckled over a 900 px scene (what random weights give) stays tens of kB."""
    rng = np.random.default_rng(0)
    mask = rng.random((900, 900)) < 0.5
    mask[:, 450:] = False
    assert len(bilevel_png(mask)) < 900 * 900 / 8 * 0.6


def test_bilevel_png_refuses_what_is_not_a_mask():
    with pytest.raises(InputError, match="non-empty"):
        bilevel_png(np.zeros((0, 4), dtype=bool))
    with pytest.raises(InputError, match="shape"):
        bilevel_png(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(InputError, match="colour"):
        bilevel_png(np.ones((2, 2), dtype=bool), (0, 300, 0))


def _boundary_by_loops(mask: np.ndarray) -> np.ndarray:
    """The page's former outline rule, pixel by pixel: a mask pixel at the array's edge or
    with a 4-neighbour off the mask."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        at_edge = x == 0 or y == 0 or x == w - 1 or y == h - 1
        out[y, x] = at_edge or not (mask[y - 1, x] and mask[y + 1, x] and mask[y, x - 1] and mask[y, x + 1])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_boundary_matches_the_pixel_rule(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < 0.7
    mask[5:15, 8:20] = True  # a solid block with an interior
    np.testing.assert_array_equal(boundary(mask), _boundary_by_loops(mask))
    assert not boundary(mask)[7:13, 10:18].any(), "a block's interior is no outline"
