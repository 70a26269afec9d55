"""Spread of evaluation numbers: mean and standard deviation over seeds, and a 95 %
percentile-bootstrap interval over objects.

An evaluation repeated with several sampling seeds gives, for each metric, one value
per evaluated object and seed (NoC@90 of an object, its IoU after 3 clicks, its box IoU,
1/0 for "best IoU >= 0.5" …). From these:

- ``mean``: the mean over all objects of all seeds (with equal objects per seed, the mean
  of the per-seed means);
- ``std``: the standard deviation (``ddof=1``) of the per-seed means — how much the
  number moves when another sample of objects is drawn (``None`` with one seed);
- ``ci95``: the percentile bootstrap interval of the mean: ``n_boot`` resamples of the
  objects (with replacement, all seeds pooled), the 2.5 % and 97.5 % quantiles
  (numpy's default linear interpolation) of the resampled means.

The bootstrap draws from ``numpy.random.default_rng(rng_seed)``: the same values and
seed give the same interval.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from terramask.core.errors import InputError

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_interval(values: Sequence[float] | np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, rng_seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``values`` ``(n,)``.

    Draws ``n_boot`` index rows ``rng.integers(0, n, size=(n_boot, n))`` from
    ``default_rng(rng_seed)`` and takes the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the row means."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise InputError("a bootstrap interval needs at least one value")
    if not 0.0 < level < 1.0:
        raise InputError(f"interval level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(rng_seed)
    means = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // v.size)  # bounded memory for large sets, same draws
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        means[start : start + rows] = v[rng.integers(0, v.size, size=(rows, v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def metric_spread(values: Sequence[float] | np.ndarray, seeds: Sequence[int] | np.ndarray, n_boot: int = N_BOOT, rng_seed: int = 0) -> dict:
    """``{"mean", "std", "ci95": [low, high], "n_objects", "per_seed": {seed: mean}}`` of
    one metric from its per-object ``values`` and the ``seeds`` they were sampled with."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    s = np.asarray(seeds).reshape(-1)
    if v.size != s.size:
        raise InputError(f"{v.size} values but {s.size} seeds")
    if v.size == 0:
        return {"mean": None, "std": None, "ci95": None, "n_objects": 0, "per_seed": {}}
    per_seed = {int(k): float(v[s == k].mean()) for k in np.unique(s)}
    std = float(np.std(list(per_seed.values()), ddof=1)) if len(per_seed) > 1 else None
    return {
        "mean": float(v.mean()),
        "std": std,
        "ci95": list(bootstrap_interval(v, n_boot, LEVEL, rng_seed)),
        "n_objects": int(v.size),
        "per_seed": per_seed,
    }


def spreads(per_object: Mapping[str, Sequence[float]], seeds: Sequence[int], n_boot: int = N_BOOT, rng_seed: int = 0) -> dict:
    """:func:`metric_spread` of every metric in ``per_object`` (``{metric: values}``)."""
    return {k: metric_spread(v, seeds, n_boot, rng_seed) for k, v in per_object.items()}


def intervals_overlap(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """Whether closed intervals ``a = [lo, hi]`` and ``b`` overlap (``None`` if one is missing)."""
    if a is None or b is None:
        return None
    return bool(a[0] <= b[1] and b[0] <= a[1])
