"""Bootstrap intervals and seed spread (issue 15), against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.core.errors import InputError
from terramask.eval.intervals import bootstrap_interval, intervals_overlap, metric_spread


def test_bootstrap_matches_a_hand_written_loop_with_the_same_generator():
    values = [0.2, 0.9, 0.5, 0.7, 0.1]
    rng = np.random.default_rng(7)
    means = []
    for _ in range(500):  # one resample at a time, written out
        idx = rng.integers(0, 5, size=(1, 5))[0]
        means.append(sum(values[i] for i in idx) / 5)
    means.sort()
    # numpy's linear quantile: position q * (n - 1) between sorted means
    def quantile(q):
        pos = q * (len(means) - 1)
        lo = int(np.floor(pos))
        return means[lo] + (pos - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])

    low, high = bootstrap_interval(values, n_boot=500, rng_seed=7)
    assert low == pytest.approx(quantile(0.025), abs=1e-12)
    assert high == pytest.approx(quantile(0.975), abs=1e-12)
    assert low < np.mean(values) < high


def test_two_values_zero_and_one_span_the_whole_range():
    """Resamples of {0, 1} have means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the
    2.5 % and 97.5 % quantiles are 0 and 1; a constant set has a zero-width interval."""
    assert bootstrap_interval([0.0, 1.0], n_boot=4000, rng_seed=1) == (0.0, 1.0)
    assert bootstrap_interval([3.0, 3.0, 3.0], n_boot=100) == (3.0, 3.0)


def test_bootstrap_is_reproducible_and_checks_its_input():
    v = np.random.default_rng(0).random(40)
    assert bootstrap_interval(v, rng_seed=3) == bootstrap_interval(v, rng_seed=3)
    assert bootstrap_interval(v, rng_seed=3) != bootstrap_interval(v, rng_seed=4)
    with pytest.raises(InputError):
        bootstrap_interval([])
    with pytest.raises(InputError):
        bootstrap_interval([1.0], level=1.0)


def test_metric_spread_over_seeds():
    values = [1, 3, 2, 4, 10, 12]
    seeds = [0, 0, 1, 1, 2, 2]
    s = metric_spread(values, seeds, n_boot=200)
    assert s["per_seed"] == {0: 2.0, 1: 3.0, 2: 11.0}
    assert s["mean"] == pytest.approx(32 / 6)
    assert s["std"] == pytest.approx(np.std([2.0, 3.0, 11.0], ddof=1))
    assert s["n_objects"] == 6
    lo, hi = s["ci95"]
    assert 1 <= lo < s["mean"] < hi <= 12
    one = metric_spread([1.0, 2.0], [5, 5], n_boot=50)
    assert one["std"] is None and one["per_seed"] == {5: 1.5}
    assert metric_spread([], [])["mean"] is None


def test_intervals_overlap():
    assert intervals_overlap([0.1, 0.3], [0.3, 0.5]) is True
    assert intervals_overlap([0.1, 0.29], [0.3, 0.5]) is False
    assert intervals_overlap(None, [0, 1]) is None
