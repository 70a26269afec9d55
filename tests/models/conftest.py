"""Fixtures for model tests: a tiny random-weight SAM checkpoint, the terramask backend
and the official predictor over the same file, and a small structured test image."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.tiny_sam import write_sam_checkpoint


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """Path of a tiny official-architecture SAM checkpoint with random weights (seed 0)."""
    return write_sam_checkpoint(tmp_path_factory.mktemp("sam") / "tiny_sam.pth", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def sam_backend(tiny_sam_checkpoint):
    """terramask's SamBackend over the tiny checkpoint (CPU)."""
    from terramask.models.sam.backend import SamBackend

    return SamBackend.from_checkpoint(tiny_sam_checkpoint)


@pytest.fixture(scope="session")
def sam_test_image():
    """A 300x400 RGB uint8 image with smooth structure and noise (non-square on purpose,
    so SAM's resize, padding and crop all matter)."""
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:300, 0:400]
    base = np.stack(
        [
            128 + 100 * np.sin(cols / 37.0) * np.cos(rows / 23.0),
            128 + 90 * np.cos((rows + cols) / 51.0),
            np.where((rows - 150) ** 2 + (cols - 210) ** 2 < 60**2, 220.0, 40.0),
        ],
        axis=2,
    )
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
