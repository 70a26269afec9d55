"""Which blocks of a tiled GeoTIFF are stored: cheap answers for mostly empty scenes.

A GeoTIFF written with GDAL's ``SPARSE_OK=TRUE`` stores no block that was never written
(or that held only the fill value); GDAL reads such a block as nodata (0 without a
nodata value). A 100,000 x 100,000 px mosaic with a few images in it is then a small file,
but every whole-scene read still fills gigabytes of empty blocks. :func:`block_presence`
reads the block table (TIFF ``BLOCK_OFFSET_x_y`` items, no pixel I/O) so that readers can

- skip a window without reading it when none of its blocks is stored
  (:func:`window_is_stored`), and
- read a decimated picture of the scene (statistics, quicklooks) from the stored blocks
  only (:func:`decimated_read`), which costs the data, not the scene area.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.windows import Window as RioWindow

#: Block tables larger than this are not read (a few seconds of metadata calls).
MAX_BLOCKS = 4_000_000


def block_presence(dataset, indexes: list[int]) -> np.ndarray | None:
    """``(block_rows, block_cols)`` bool: True where a block of any band in ``indexes``
    (1-based) is stored in the file. None when unknown (not a GeoTIFF, or too many blocks)."""
    if dataset.driver != "GTiff" or not dataset.block_shapes:
        return None
    bh, bw = dataset.block_shapes[0]
    nby, nbx = math.ceil(dataset.height / bh), math.ceil(dataset.width / bw)
    if nby * nbx > MAX_BLOCKS:
        return None
    separate = str(getattr(dataset.interleaving, "name", "")).lower() == "band"
    bands = indexes if separate else indexes[:1]
    present = np.zeros((nby, nbx), dtype=bool)
    for band in bands:
        for by in range(nby):
            for bx in range(nbx):
                if not present[by, bx]:
                    item = dataset.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=band)
                    present[by, bx] = item is not None and item not in ("", "0")
    return present


def window_is_stored(presence: np.ndarray, block_shape: tuple[int, int], col_off: int, row_off: int,
                     width: int, height: int) -> bool:
    """Whether any stored block meets the window (scene pixels)."""
    bh, bw = block_shape
    by0, by1 = row_off // bh, (row_off + height - 1) // bh + 1
    bx0, bx1 = col_off // bw, (col_off + width - 1) // bw + 1
    return bool(presence[by0:by1, bx0:bx1].any())


def decimated_read(dataset, indexes: list[int], out_shape: tuple[int, int], presence: np.ndarray,
                   fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour decimated read of the whole scene from its stored blocks only.

    Returns ``(pixels (len(indexes), rows, cols), stored (rows, cols) bool)``: output pixel
    ``(r, c)`` samples scene pixel ``(floor((r + .5) * H / rows), floor((c + .5) * W / cols))``;
    samples in blocks that are not stored hold ``fill`` and ``stored`` False. Memory: the
    output plus one block.
    """
    rows, cols = int(out_shape[0]), int(out_shape[1])
    height, width = dataset.height, dataset.width
    bh, bw = dataset.block_shapes[0]
    src_r = np.minimum(((np.arange(rows) + 0.5) * height / rows).astype(np.int64), height - 1)
    src_c = np.minimum(((np.arange(cols) + 0.5) * width / cols).astype(np.int64), width - 1)
    dtype = np.result_type(*[dataset.dtypes[i - 1] for i in indexes])
    out = np.full((len(indexes), rows, cols), fill, dtype=dtype)
    stored = np.zeros((rows, cols), dtype=bool)
    block_r, block_c = src_r // bh, src_c // bw
    for by, bx in zip(*np.nonzero(presence), strict=True):
        rr = np.flatnonzero(block_r == by)
        cc = np.flatnonzero(block_c == bx)
        if rr.size == 0 or cc.size == 0:
            continue
        y0, x0 = int(by) * bh, int(bx) * bw
        window = RioWindow(x0, y0, min(bw, width - x0), min(bh, height - y0))
        block = dataset.read(indexes, window=window)
        out[:, rr[:, None], cc[None, :]] = block[:, (src_r[rr] - y0)[:, None], (src_c[cc] - x0)[None, :]]
        stored[rr[:, None], cc[None, :]] = True
    return out, stored
