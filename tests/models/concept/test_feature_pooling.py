"""Masks pooled over feature cells (models/concept/feature_pooling.py): the share of each
cell a mask covers (image grid and low-res), unit features, weighted pooling, centring."""

from __future__ import annotations

import numpy as np

from terramask.models.base import FeatureGrid
from terramask.models.concept.feature_pooling import cell_coverage, centre, low_res_coverage, pool, unit_features


def test_coverage_of_a_mask_and_of_a_low_res_mask():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:5] = True
    cover = cell_coverage(mask, (2, 2), (10.0, 10.0))
    np.testing.assert_allclose(cover, [[0.5, 0.0], [0.0, 0.0]])
    low = np.full((1, 8, 8), -1.0, np.float32)
    low[0, :4, :2] = 1.0
    np.testing.assert_allclose(low_res_coverage(low, 0.0, (2, 2), 4)[0], [[0.5, 0.0], [0.0, 0.0]])


def test_pooling_weights_unit_cells_and_centring_removes_what_they_share():
    feats = np.zeros((2, 1, 2), np.float32)
    feats[:, 0, 0] = [3.0, 0.0]   # along x, length 3
    feats[:, 0, 1] = [0.0, 0.5]   # along y, length 0.5
    grid = FeatureGrid(features=feats, cell=(16.0, 16.0), low_res_per_cell=4)
    unit = unit_features(grid)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=0), 1.0, rtol=1e-6)
    vectors = pool(unit, np.array([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]], np.float32))
    np.testing.assert_allclose(vectors, [[1, 0], [2 ** -0.5, 2 ** -0.5], [0, 0]], atol=1e-6)
    shared = np.array([0.5, 0.5], np.float32)
    centred = centre(unit, shared)
    np.testing.assert_allclose(centred[:, 0, 0], [2 ** -0.5, -(2 ** -0.5)], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(centred, axis=0), 1.0, rtol=1e-6)
