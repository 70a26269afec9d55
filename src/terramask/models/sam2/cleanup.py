"""SAM 2's mask clean-up on the CPU.

The official post-processing that fills small holes and removes small islands in the
low-resolution masks (``max_hole_area`` / ``max_sprinkle_area``) calls a CUDA extension
(``sam2._C``) that CPU installs do not have; upstream then silently skips it. Here it is
done with OpenCV connected components (8-connectivity, like the CUDA kernel) on any
device.
"""

from __future__ import annotations

import numpy as np

from terramask.core.errors import InputError
from terramask.core.lazy import require


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of ``(N, H, W)`` bool masks (OpenCV).

    Returns ``labels (N, H, W) int32`` (0 on background, 1.. per component) and
    ``areas (N, H, W) int32`` (the pixel count of each pixel's component, 0 on
    background), the contract of ``sam2.utils.misc.get_connected_components``.
    """
    cv2 = require("cv2", "sam", "opencv-python-headless")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise InputError(f"connected_components needs (N, H, W) masks, got shape {mask.shape}")
    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for i, m in enumerate(mask):
        if not m.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        labels[i] = lab
        area_of = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        area_of[0] = 0
        areas[i] = area_of[lab]
    return labels, areas


def fill_holes_and_sprinkles(
    logits: np.ndarray, threshold: float = 0.0, max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0
) -> np.ndarray:
    """SAM 2's mask clean-up on ``(N, h, w)`` float logits, on the CPU.

    Background components (``logit <= threshold``) of at most ``max_hole_area`` pixels
    become ``threshold + 10``; foreground components (``> threshold``, taken from the
    input, as upstream) of at most ``max_sprinkle_area`` pixels become ``threshold - 10``.
    Equal to ``SAM2Transforms.postprocess_masks`` with the CUDA extension present.
    """
    logits = np.asarray(logits, dtype=np.float32)
    out = logits
    if max_hole_area > 0:
        labels, areas = connected_components(logits <= threshold)
        hole = (labels > 0) & (areas <= max_hole_area)
        out = np.where(hole, np.float32(threshold + 10.0), out)
    if max_sprinkle_area > 0:
        labels, areas = connected_components(logits > threshold)
        sprinkle = (labels > 0) & (areas <= max_sprinkle_area)
        out = np.where(sprinkle, np.float32(threshold - 10.0), out)
    return out.astype(np.float32, copy=False)
