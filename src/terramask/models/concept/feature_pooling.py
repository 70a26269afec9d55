"""Masks pooled over an encoder's feature cells (find-similar's geometry,
:mod:`terramask.models.concept.similar`).

A SAM-family encoder gives a feature grid over the image
(:class:`~terramask.models.base.FeatureGrid`: ``(C, h, w)`` features, each cell
``cell = (rows, cols)`` image pixels). Comparisons are cosine: every cell is scaled to
unit length (:func:`unit_features`), optionally after removing what all cells of a scene
share (:func:`centre`). A mask on the image grid (:func:`cell_coverage`) or a low-res
mask of the decoder (:func:`low_res_coverage`) becomes per-cell weights, and
:func:`pool` averages the cells under those weights into one unit vector.
"""

from __future__ import annotations

import numpy as np

from terramask.models.base import FeatureGrid


def unit_features(grid: FeatureGrid) -> np.ndarray:
    """``(C, h, w)`` features with every cell scaled to unit length (cosine geometry)."""
    feats = np.asarray(grid.features, dtype=np.float32)
    norm = np.linalg.norm(feats, axis=0, keepdims=True)
    return feats / np.maximum(norm, 1e-12)


def cell_coverage(mask: np.ndarray, shape: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """``(h, w)`` float32: the share of each cell's image pixels that ``mask`` ``(H, W)`` covers."""
    h, w = shape
    rows, cols = mask.shape
    row_cell = np.minimum((np.arange(rows) / cell[0]).astype(np.int64), h - 1)
    col_cell = np.minimum((np.arange(cols) / cell[1]).astype(np.int64), w - 1)
    area = np.outer(np.bincount(row_cell, minlength=h), np.bincount(col_cell, minlength=w)).astype(np.float64)
    ys, xs = np.nonzero(mask)
    counts = np.bincount(row_cell[ys] * w + col_cell[xs], minlength=h * w).reshape(h, w)
    return (counts / np.maximum(area, 1.0)).astype(np.float32)


def low_res_coverage(low_res: np.ndarray, threshold: float, shape: tuple[int, int], factor: int) -> np.ndarray:
    """``(N, h, w)`` float32 share of each cell covered by the low-res masks ``(N, L, L)``
    (``logits > threshold``), ``factor`` low-res pixels per cell side, cropped to ``shape``."""
    n, side = low_res.shape[0], low_res.shape[-1]
    g = side // factor
    masks = (low_res[:, : g * factor, : g * factor] > threshold).astype(np.float32)
    cover = masks.reshape(n, g, factor, g, factor).mean(axis=(2, 4))
    return cover[:, : shape[0], : shape[1]]


def pool(unit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unit vectors ``(N, C)`` of the weighted mean cell features: ``unit (C, h, w)``,
    ``weights (N, h, w)``; a row of zero weights gives a zero vector."""
    c = unit.shape[0]
    summed = weights.reshape(len(weights), -1) @ unit.reshape(c, -1).T
    norm = np.linalg.norm(summed, axis=1, keepdims=True)
    return (summed / np.maximum(norm, 1e-12)).astype(np.float32)


def centre(unit: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` unit features minus the scene's ``center`` ``(C,)``, each cell scaled to
    unit length again: what every cell shares (most of a random or a real encoder's
    features) no longer makes every cell look alike."""
    shifted = unit - center.reshape(-1, 1, 1)
    return (shifted / np.maximum(np.linalg.norm(shifted, axis=0, keepdims=True), 1e-12)).astype(np.float32)
