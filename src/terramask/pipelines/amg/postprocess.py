"""Filtering steps of automatic mask generation, as the reference does them, on windows.

- :func:`nms`: greedy box NMS with torchvision's CPU semantics (float32 IoU, stable
  descending sort, suppress when IoU > threshold), so ties resolve like the reference.
- :func:`box_near_crop_edge`: the reference's ``is_box_near_crop_edge``.
- :func:`remove_small_regions`: hole filling / island removal (``min_mask_region_area``)
  computed on a mask's window with exactly the result the reference gets on the whole
  grid: background components that leave the window are sized with the outside area.
- :func:`postprocess_small_regions`: both passes on every mask, then NMS preferring
  unchanged masks, like ``SamAutomaticMaskGenerator.postprocess_small_regions``.
"""

from __future__ import annotations

import numpy as np

from terramask.pipelines.amg.masks import CompactMasks


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Kept indices, highest score first. ``boxes (N, 4)`` xyxy; IoU in float32 with
    areas ``(x1 - x0) * (y1 - y0)`` like ``torchvision.ops.nms``; ties keep index order."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    thr = float(iou_threshold)
    for pos in range(n):
        i = order[pos]
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > thr]] = True
    return np.asarray(keep, dtype=np.int64)


def box_near_crop_edge(boxes: np.ndarray, crop_box, orig_box, atol: float = 20.0) -> np.ndarray:
    """``(N,)`` bool: box (crop frame, xyxy) within ``atol`` of a crop edge that is not an
    edge of the original image (reference ``is_box_near_crop_edge``, float32)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = crop_box[0], crop_box[1]
    b = (boxes + np.array([x0, y0, x0, y0], dtype=np.float64)).astype(np.float32)
    crop = np.asarray(crop_box, dtype=np.float32)[None]
    orig = np.asarray(orig_box, dtype=np.float32)[None]
    near_crop = np.abs(b - crop) <= np.float32(atol)
    near_image = np.abs(b - orig) <= np.float32(atol)
    return np.any(near_crop & ~near_image, axis=1)


# -- small regions ----------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _components(binary: np.ndarray):
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    return n, labels, stats[:, cv2.CC_STAT_AREA].astype(np.int64)


def _remove_small_regions_full(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """The reference ``remove_small_regions`` on a full grid."""
    correct_holes = mode == "holes"
    n, regions, sizes_all = _components(correct_holes ^ mask)
    sizes = sizes_all[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(n) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def _islands(win: np.ndarray, area_thresh: float) -> tuple[np.ndarray, bool]:
    # all foreground is inside the window, so window components are grid components
    return _remove_small_regions_full(win, area_thresh, "islands")


def _holes(win: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], area_thresh: float):
    """Fill holes of a mask given by its window; returns ``(origin, window, changed)`` or
    ``None`` when a small background component reaches outside the window (the caller
    then works on the full grid)."""
    rows, cols = shape
    ox, oy = origin
    h, w = win.shape
    px0, py0 = max(ox - 1, 0), max(oy - 1, 0)
    px1, py1 = min(ox + w + 1, cols), min(oy + h + 1, rows)
    work = np.ones((py1 - py0, px1 - px0), dtype=np.uint8)
    work[oy - py0 : oy - py0 + h, ox - px0 : ox - px0 + w] = ~win
    n, labels, sizes = _components(work)
    sizes = sizes.copy()
    sizes[0] = 0  # label 0 is the mask itself
    # outside parts of the grid, each touching one padded side (all background)
    parts = []  # (label, area)
    if py0 > 0:
        parts.append(("A", int(labels[0, 0]), py0 * cols))
    if py1 < rows:
        parts.append(("B", int(labels[-1, 0]), (rows - py1) * cols))
    if px0 > 0:
        parts.append(("L", int(labels[0, 0]), (py1 - py0) * px0))
    if px1 < cols:
        parts.append(("R", int(labels[0, -1]), (py1 - py0) * (cols - px1)))
    uf = _UnionFind(n)
    names = {p[0]: p[1] for p in parts}
    for a, b in (("A", "L"), ("A", "R"), ("B", "L"), ("B", "R")):
        if a in names and b in names:
            uf.union(names[a], names[b])
    total = np.zeros(n, dtype=np.int64)
    for lab in range(1, n):
        total[uf.find(lab)] += sizes[lab]
    outside_root = set()
    for _, lab, area in parts:
        root = uf.find(lab)
        total[root] += area
        outside_root.add(root)
    comp_size = np.array([total[uf.find(lab)] for lab in range(n)], dtype=np.int64)
    small = [lab for lab in range(1, n) if comp_size[lab] < area_thresh]
    if not small:
        return origin, win, False
    if any(uf.find(lab) in outside_root for lab in small):
        return None
    filled = np.isin(labels, [0] + small)
    return (px0, py0), filled, True


def remove_small_regions(
    win: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], area_thresh: float, mode: str
) -> tuple[tuple[int, int], np.ndarray, bool]:
    """Reference ``remove_small_regions`` for the mask that is ``win (h, w)`` at
    ``origin`` on a grid of ``shape`` and False elsewhere. Returns the new mask as
    ``(origin, window, changed)`` (the window may grow when holes at its border fill)."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    if win.size == 0:
        full = np.zeros(shape, dtype=bool)
        new, changed = _remove_small_regions_full(full, area_thresh, mode)
        return (0, 0), new, changed
    if mode == "islands":
        new, changed = _islands(win, area_thresh)
        return origin, new, changed
    res = _holes(win, origin, shape, area_thresh)
    if res is not None:
        return res
    full = np.zeros(shape, dtype=bool)
    full[origin[1] : origin[1] + win.shape[0], origin[0] : origin[0] + win.shape[1]] = win
    new, changed = _remove_small_regions_full(full, area_thresh, "holes")
    return (0, 0), new, changed


def postprocess_small_regions(masks: CompactMasks, boxes: np.ndarray, min_area: float, nms_thresh: float):
    """Holes then islands smaller than ``min_area`` on every mask, then NMS (threshold
    ``nms_thresh``) preferring unchanged masks. Returns ``(keep, masks, boxes)``: kept
    indices (NMS order) into the inputs, and the updated masks/boxes of ALL inputs
    (changed masks get their new window and box; subset them with ``keep``)."""
    n = len(masks)
    if n == 0:
        return np.zeros(0, np.int64), masks, boxes
    new_items, unchanged = [], np.zeros(n, dtype=bool)
    for i in range(n):
        origin, win = masks.window(i)
        origin, win, c1 = remove_small_regions(win, origin, masks.shape, min_area, "holes")
        origin, win, c2 = remove_small_regions(win, origin, masks.shape, min_area, "islands")
        new_items.append((origin, win))
        unchanged[i] = not (c1 or c2)
    new_masks = CompactMasks.from_windows(masks.shape, new_items)
    new_boxes = new_masks.boxes()
    keep = nms(new_boxes, unchanged.astype(np.float32), nms_thresh)
    out_masks = CompactMasks(masks.shape, masks.windows.copy(), list(masks.bits), masks.areas.copy())
    out_boxes = np.array(boxes, dtype=np.float64, copy=True)
    for i in keep:
        if not unchanged[i]:
            out_masks.windows[i] = new_masks.windows[i]
            out_masks.bits[i] = new_masks.bits[i]
            out_masks.areas[i] = new_masks.areas[i]
            out_boxes[i] = new_boxes[i]
    return keep, out_masks, out_boxes
