"""The fp32 floor of an encoder on the machine at hand: FLOPs counted on the real
architecture, divided by the dense matmul rate measured here and now.

- :func:`count_flops` runs a module once under ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions and attention counted as PyTorch defines them: 2 FLOPs per
  multiply-add; element-wise work is not counted, so the floor is a lower bound).
  Scaled-dot-product attention is counted through its math decomposition, since the
  fused CPU kernel has no FLOP formula.
- :func:`matmul_rate` times dense float32 matrix products at encoder-like shapes
  (ViT-B's 4096 tokens x 768 channels, MLP 3072) with ``threads`` threads, in PyTorch
  and in numpy's BLAS, and keeps the best: the achievable GFLOP/s.
- :func:`floor_seconds` = FLOPs / achievable rate.

Heavy dependencies (torch, threadpoolctl) are imported when called.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from terramask.core.errors import InputError
from terramask.core.lazy import require

# (m, k, n) of C = A(m, k) @ B(k, n): ViT-B qkv / MLP in / MLP out at 64 x 64 tokens, and
# a Hiera/TinyViT-like stage-1 shape (many tokens, few channels)
ENCODER_SHAPES: tuple[tuple[int, int, int], ...] = ((4096, 768, 2304), (4096, 768, 3072), (4096, 3072, 768), (16384, 96, 384))


def count_flops(module: Any, *inputs: Any) -> int:
    """FLOPs of one forward pass of ``module(*inputs)`` (torch tensors), no gradients."""
    torch = require("torch", "sam")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        module(*inputs)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class MatmulRate:
    """Achievable dense float32 GFLOP/s with ``threads`` threads: the best median over
    ``per_shape`` (``"torch m x k x n"`` / ``"numpy m x k x n"`` -> GFLOP/s)."""

    threads: int
    gflops: float
    best: str
    per_shape: dict[str, float] = field(default_factory=dict)


def _median_rate(fn: Callable[[], object], flops: float, repeats: int, min_seconds: float) -> float:
    fn()  # warm-up: allocation, thread pool start
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    loops = max(1, int(min_seconds / once))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        rates.append(flops * loops / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def matmul_rate(
    threads: int, shapes: Sequence[tuple[int, int, int]] = ENCODER_SHAPES, repeats: int = 5, min_seconds: float = 0.3
) -> MatmulRate:
    """Measure float32 ``A @ B`` GFLOP/s (2 m k n FLOPs) per shape in PyTorch (its
    thread count set to ``threads``, restored after) and numpy (BLAS threads limited with
    threadpoolctl when installed; otherwise numpy is skipped unless ``threads`` is 1 and
    the environment already limits it)."""
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    torch = require("torch", "sam")
    rng = np.random.default_rng(0)
    per: dict[str, float] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for m, k, n in shapes:
                a, b = torch.randn(m, k), torch.randn(k, n)
                out = torch.empty(m, n)
                per[f"torch {m}x{k}x{n}"] = _median_rate(partial(torch.mm, a, b, out=out), 2.0 * m * k * n, repeats, min_seconds)
    finally:
        torch.set_num_threads(before)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads, user_api="blas"):
            for m, k, n in shapes:
                a32 = rng.standard_normal((m, k), dtype=np.float32)
                b32 = rng.standard_normal((k, n), dtype=np.float32)
                o32 = np.empty((m, n), np.float32)
                per[f"numpy {m}x{k}x{n}"] = _median_rate(partial(np.matmul, a32, b32, out=o32), 2.0 * m * k * n, repeats, min_seconds)
    best = max(per, key=lambda key: per[key])
    return MatmulRate(threads=threads, gflops=per[best], best=best, per_shape=per)


def floor_seconds(flops: int | float, rate: MatmulRate | float) -> float:
    """Seconds an encoder of ``flops`` FLOPs needs at least at ``rate`` (GFLOP/s)."""
    gflops = rate.gflops if isinstance(rate, MatmulRate) else float(rate)
    if gflops <= 0:
        raise InputError(f"a matmul rate must be positive, got {gflops} GFLOP/s")
    return float(flops) / (gflops * 1e9)
