import pickle

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.core.geometry import Window, plan_tiles


def test_window_bounds_slices_and_intersection():
    w = Window(10, 20, 30, 40)
    assert w.shape == (40, 30)
    assert w.bounds == (10, 20, 40, 60)
    assert w.slices() == (slice(20, 60), slice(10, 40))
    assert w.intersection(Window(30, 50, 100, 100)) == Window(30, 50, 10, 10)
    assert w.intersection(Window(100, 100, 5, 5)).area == 0
    assert w.contains(10, 20) and not w.contains(40, 20)


def test_plan_tiles_covers_scene_with_full_size_tiles():
    tiles = plan_tiles("s.tif", 2500, 1100, 1024, 128)
    cols = sorted({t.window.col_off for t in tiles})
    rows = sorted({t.window.row_off for t in tiles})
    assert cols == [0, 896, 1476]
    assert rows == [0, 76]
    assert all(t.window.width == 1024 and t.window.height == 1024 for t in tiles)
    covered = np.zeros((1100, 2500), bool)
    for t in tiles:
        x0, y0, x1, y1 = t.window.bounds
        assert x1 <= 2500 and y1 <= 1100
        covered[t.window.slices()] = True
    assert covered.all()
    assert pickle.loads(pickle.dumps(tiles[0])) == tiles[0]


def test_small_scene_is_one_tile():
    (tile,) = plan_tiles("s.tif", 300, 200, 1024, 64)
    assert tile.window == Window(0, 0, 300, 200)
    assert tile.id == "r0_c0"


@pytest.mark.parametrize("size,overlap", [(0, 0), (100, 100), (100, -1)])
def test_plan_tiles_rejects_bad_parameters(size, overlap):
    with pytest.raises(InputError):
        plan_tiles("s.tif", 10, 10, size, overlap)
