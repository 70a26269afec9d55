"""Object-aware point prompts: fewer decoder prompts for "segment everything" on a CPU.

The reference generator prompts a regular grid (``points_per_side`` squared points per
crop, 1,024 by default); on a CPU the mask decoder then dominates a tile's time, and most
points land in the same few large regions. Like MobileSAMv2, which replaces the grid
with one prompt per object proposal, ``prompts="objects"`` prompts one point per region
of a weight-free over-segmentation of the crop:

1. the crop is shrunk so its longest side is :data:`WORK_SIZE` pixels (area averaging);
2. Felzenszwalb's graph segmentation (scikit-image) cuts it into regions of similar
   colour, each at least the area of one cell of the grid it replaces (``(WORK_SIZE /
   points per side)**2`` working pixels: 64 for the default 32 x 32 grid, so the
   proposals resolve what the grid resolves);
3. each region gives one point: its pixel farthest from the region's border (the
   maximum of the distance transform), so the point lies well inside the region, not on
   an edge where the decoder's answer is ambiguous;
4. when there are more regions than ``max_points`` (the grid's count), the largest
   regions are kept.

The decoder, its three candidate masks per point and every filter stay as they are; only
the prompts change. The points are returned normalised to ``[0, 1]`` like the grids of
:mod:`terramask.pipelines.amg.params`, ``(x, y)``, ordered by region label (deterministic
for a given crop).
"""

from __future__ import annotations

import numpy as np

from terramask.core.errors import InputError

#: Longest side of the working raster the regions are found on (pixels).
WORK_SIZE = 256
#: Felzenszwalb parameters on the working raster: colour scale, smoothing.
SCALE = 60.0
SIGMA = 0.8


def crop_prompts(prompts: str, rgb: np.ndarray, crop_box, grid: np.ndarray) -> np.ndarray:
    """The normalised ``(N, 2)`` prompts of one crop: the layer's ``grid`` for
    ``prompts="grid"``, else :func:`object_points` of the crop ``crop_box`` (``x0, y0, x1,
    y1`` of ``rgb``) with at most as many points as the grid."""
    if prompts == "grid":
        return grid
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    cell = WORK_SIZE / np.sqrt(len(grid))  # one grid cell's side on the working raster
    return object_points(rgb[y0:y1, x0:x1], max_points=len(grid), min_region=max(4, round(cell * cell)))


def region_labels(rgb: np.ndarray, min_region: int = 64, work_size: int = WORK_SIZE) -> np.ndarray:
    """``(h, w)`` int labels 0..K-1 of the regions of ``rgb`` (``(H, W, 3)`` uint8) on the
    working raster (longest side ``work_size``, aspect kept; ``h, w >= 1``), regions of at
    least ``min_region`` working pixels where the raster allows."""
    import cv2
    from skimage.segmentation import felzenszwalb

    rows, cols = rgb.shape[:2]
    scale = min(1.0, work_size / max(rows, cols))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
        small = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA)
    return felzenszwalb(small, scale=SCALE, sigma=SIGMA, min_size=int(min_region)).astype(np.int32)


def interior_points(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each region of ``labels`` (``(h, w)`` int, 0..K-1): the pixel farthest from the
    region's border, as ``(K, 2)`` float64 ``(x, y)`` pixel centres, and the region areas
    ``(K,)`` int64."""
    import cv2

    lab = np.ascontiguousarray(labels, dtype=np.int32)
    border = np.zeros(lab.shape, dtype=bool)
    border[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    border[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    border[:-1, :] |= lab[:-1, :] != lab[1:, :]
    border[1:, :] |= lab[:-1, :] != lab[1:, :]
    # distance to the nearest border pixel (or image edge), inside each region
    inside = np.pad(~border, 1, constant_values=False).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
    flat_lab, flat_dist = lab.ravel(), dist.ravel()
    count = int(flat_lab.max()) + 1 if flat_lab.size else 0
    order = np.lexsort((flat_dist, flat_lab))  # by label, then distance: the last of each label is its deepest pixel
    last = np.flatnonzero(np.r_[flat_lab[order][1:] != flat_lab[order][:-1], True])
    best = order[last]
    labels_found = flat_lab[best]
    points = np.zeros((count, 2), dtype=np.float64)
    points[labels_found, 0] = best % lab.shape[1] + 0.5
    points[labels_found, 1] = best // lab.shape[1] + 0.5
    areas = np.bincount(flat_lab, minlength=count).astype(np.int64)
    return points, areas


def object_points(rgb: np.ndarray, max_points: int, min_region: int = 64, work_size: int = WORK_SIZE) -> np.ndarray:
    """``(N, 2)`` float64 normalised ``(x, y)`` prompts, one per region of ``rgb`` (``(H, W,
    3)`` uint8, a crop) of at least ``min_region`` working pixels, at most ``max_points``
    (the largest regions), ``N >= 1``."""
    if max_points < 1:
        raise InputError(f"max_points must be >= 1, got {max_points}")
    labels = region_labels(rgb, min_region, work_size)
    points, areas = interior_points(labels)
    present = np.flatnonzero(areas > 0)
    if len(present) > max_points:
        largest = np.argsort(-areas[present], kind="stable")[:max_points]
        present = np.sort(present[largest])
    h, w = labels.shape
    return points[present] / np.array([w, h], dtype=np.float64)
