"""models/flops.py: FLOPs counted on real modules (linear, convolution, fused attention
through its math decomposition), the measured matmul rate, and the floor arithmetic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from terramask.core.errors import InputError  # noqa: E402
from terramask.models.flops import MatmulRate, count_flops, floor_seconds, matmul_rate  # noqa: E402


def test_linear_and_convolution_flops_are_two_per_multiply_add():
    assert count_flops(torch.nn.Linear(8, 4, bias=False), torch.zeros(3, 8)) == 2 * 3 * 8 * 4
    conv = torch.nn.Conv2d(3, 5, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 10, 12)) == 2 * 10 * 12 * 5 * 3 * 9


def test_fused_attention_is_counted():
    """The CPU flash-attention kernel has no FLOP formula; its math path is counted."""
    b, n, s, h = 1, 2, 64, 16
    q = torch.randn(b, n, s, h)
    flops = count_flops(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x), q)
    assert flops == 2 * (2 * b * n * s * s * h)


def test_count_flops_of_the_tiny_sam_encoder(sam_backend):
    """A real architecture: SAM's ViT image encoder (tiny configuration) at 1024 x 1024.
    Its patch embedding alone is 2 * 64 * 64 * 32 * 3 * 16 * 16 FLOPs; the rest is > 0."""
    encoder = sam_backend.model.image_encoder
    flops = count_flops(encoder, torch.zeros(1, 3, 1024, 1024))
    patch = 2 * 64 * 64 * 32 * 3 * 16 * 16
    assert flops > patch
    embed_dim = 32
    linear_per_block = 2 * 64 * 64 * embed_dim * (3 * embed_dim + embed_dim + 2 * 4 * embed_dim)
    assert flops > patch + 2 * linear_per_block  # two blocks of qkv, proj and MLP at least


def test_matmul_rate_measures_torch_and_numpy_and_restores_threads():
    before = torch.get_num_threads()
    rate = matmul_rate(1, shapes=((64, 32, 48),), repeats=2, min_seconds=0.01)
    assert torch.get_num_threads() == before
    assert rate.threads == 1 and rate.gflops > 0
    assert set(rate.per_shape) >= {"torch 64x32x48"} and rate.best in rate.per_shape
    assert rate.gflops == max(rate.per_shape.values())
    with pytest.raises(InputError, match="threads"):
        matmul_rate(0)


def test_floor_seconds():
    assert floor_seconds(5e11, 100.0) == pytest.approx(5.0)
    assert floor_seconds(2e9, MatmulRate(threads=2, gflops=4.0, best="x")) == pytest.approx(0.5)
    with pytest.raises(InputError, match="positive"):
        floor_seconds(1e9, 0.0)
