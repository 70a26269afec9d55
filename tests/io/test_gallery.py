"""Contact sheets (io/gallery.py)."""

import numpy as np
import pytest

from terramask.core.errors import InputError, SceneError
from terramask.io.gallery import make_gallery
from terramask.io.overlay import save_png


def test_gallery_layout_from_arrays_and_paths(tmp_path):
    pictures = [np.full((60, 90, 3), 40 * i, np.uint8) for i in range(4)]
    paths = [save_png(tmp_path / f"p{i}.png", pic) for i, pic in enumerate(pictures)]
    items = pictures[:2] + paths[2:] + [pictures[0][:30, :30]]
    sheet = make_gallery(items, cols=2, thumb=64, titles=["a", "b", "c", "d", "a very long title " * 5], pad=4)
    rows = 3
    assert sheet.shape[1] == 4 + 2 * (64 + 4)
    assert (sheet.shape[0] - 4) % rows == 0
    cell_h = (sheet.shape[0] - 4) // rows
    # Picture 3 (a file) sits in row 1, column 1, shrunk to 64 x 43 and centred.
    y = 4 + 1 * cell_h + (64 - 43) // 2
    x = 4 + 1 * (64 + 4)
    assert tuple(sheet[y + 20, x + 30]) == (120, 120, 120)
    with pytest.raises(InputError, match="at least one"):
        make_gallery([])
    with pytest.raises(SceneError, match="does not exist"):
        make_gallery([tmp_path / "missing.png"])
