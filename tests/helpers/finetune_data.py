"""Tiny labelled datasets for fine-tuning tests: ``images/*.png`` + ``masks/*.png``.

Each image is a noisy dark ground with bright rectangles and discs (class 1, the
objects to learn) drawn with :mod:`helpers.blobs`; the class mask holds 1 on objects,
0 elsewhere (and optionally a 255 ignore strip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.blobs import disc, rect


def write_blob_dataset(root, n_images: int = 4, size: int = 64, seed: int = 0, ignore_strip: bool = False) -> Path:
    """Write ``n_images`` labelled images of ``size``x``size`` under ``root``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    for k in range(n_images):
        objs = []
        for _ in range(2):
            x0, y0 = (int(v) for v in rng.integers(2, size // 2, size=2))
            if rng.random() < 0.5:
                objs.append(rect(shape, x0, y0, x0 + int(rng.integers(8, size // 3)), y0 + int(rng.integers(8, size // 3))))
            else:
                objs.append(disc(shape, x0 + 8, y0 + 8, int(rng.integers(5, 9))))
        target = np.any(objs, axis=0)
        grey = rng.integers(20, 60, size=shape)
        grey[target] += 150
        rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)
        labels = target.astype(np.uint8)
        if ignore_strip:
            labels[:, -3:] = 255
        Image.fromarray(rgb).save(root / "images" / f"img{k:02d}.png")
        Image.fromarray(labels).save(root / "masks" / f"img{k:02d}.png")
    return root
