"""Image readers injected into :class:`terramask.eval.datasets.SegmentationDataset`.

The eval layer does not import io; the pipelines give it a reader that does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from terramask.eval.datasets import TIFF_SUFFIXES, read_rgb8


def read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file: GeoTIFFs through
    :func:`terramask.io.scene.open_scene` (the scene's display bands and scene-wide
    stretch, as every other command shows them), other formats with Pillow."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return read_rgb8(path)
    from terramask.io.scene import open_scene

    scene = open_scene(path)
    try:
        rgb = scene.read_rgb8()
    finally:
        close = getattr(scene, "close", None)
        if close is not None:
            close()
    return np.ascontiguousarray(rgb)
