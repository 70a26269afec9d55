"""Chunked global attention of SAM's ViT encoder equals the official attention and holds
a fraction of its memory; the backend installs it without touching the state dict."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")

from helpers.tiny_sam import build_official_sam, write_sam_checkpoint  # noqa: E402
from terramask.models.sam import encoder_attention  # noqa: E402
from terramask.models.sam.backend import SamBackend  # noqa: E402


def _global_block(dim: int, heads: int, grid: int, seed: int):
    from segment_anything.modeling.image_encoder import Block

    torch.manual_seed(seed)
    block = Block(dim=dim, num_heads=heads, use_rel_pos=True, window_size=0, input_size=(grid, grid)).eval()
    with torch.no_grad():
        block.attn.rel_pos_h.normal_(0.0, 0.5)
        block.attn.rel_pos_w.normal_(0.0, 0.5)
    return block


@pytest.mark.slow
def test_vit_b_sized_global_attention_equals_official():
    """ViT-B's global block: 768 channels, 12 heads, 64 x 64 tokens (the official map is
    12 x 4096 x 4096 float32 = 805 MB); the default chunk splits it into 13 parts."""
    block = _global_block(768, 12, 64, seed=0)
    x = torch.randn(1, 64, 64, 768, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = block.attn(x)
        ours = encoder_attention.chunked_attention_forward(block.attn, x)
    assert ours.shape == ref.shape == (1, 64, 64, 768)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 1024 * 1024, 1 << 40])
def test_any_chunking_gives_the_official_result(monkeypatch, chunk_bytes):
    """One query row per chunk, a few rows, and everything at once (a ragged last chunk
    included: 24 rows), with a batch of two images."""
    monkeypatch.setattr(encoder_attention, "CHUNK_BYTES", chunk_bytes)
    block = _global_block(64, 4, 24, seed=2)
    x = torch.randn(2, 24, 24, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = block(x)  # the whole block: norm, attention, residual, MLP
        encoder_attention.chunk_global_attention(type("Enc", (), {"blocks": [block]})())
        ours = block(x)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5, rtol=0)


def test_backend_encoder_equals_official_encoder(tmp_path, monkeypatch):
    """The tiny SAM (block 1 global) through SamBackend: chunked global attention (forced
    to several chunks), same embeddings as the official encoder; the state dict and the
    windowed block are untouched, and official_attention restores the official forward."""
    monkeypatch.setattr(encoder_attention, "CHUNK_BYTES", 2 * 64 * 4096 * 4 * 10)  # 10 rows per chunk
    path = write_sam_checkpoint(tmp_path / "tiny.pth", arch="tiny", seed=4)
    official = build_official_sam(path)
    backend = SamBackend.from_checkpoint(path)
    blocks = backend.model.image_encoder.blocks
    assert [hasattr(b.attn, encoder_attention._MARK) for b in blocks] == [False, True]
    assert set(backend.model.state_dict()) == set(official.state_dict())
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = official.image_encoder(x)
        ours = backend.model.image_encoder(x)
        with encoder_attention.official_attention(backend.model.image_encoder):
            assert "forward" not in vars(blocks[1].attn)
            again = backend.model.image_encoder(x)
    assert "forward" in vars(blocks[1].attn)
    assert ours.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(again.numpy(), ref.numpy())


def test_gradients_through_chunked_attention_equal_official(monkeypatch):
    """Fine-tuning with encoder adapters trains through this forward: same gradients."""
    monkeypatch.setattr(encoder_attention, "CHUNK_BYTES", 1)
    block = _global_block(32, 2, 8, seed=6)
    x = torch.randn(1, 8, 8, 32, generator=torch.Generator().manual_seed(7))
    block(x).square().sum().backward()
    ref = block.attn.qkv.weight.grad.clone()
    block.zero_grad()
    encoder_attention.chunk_global_attention(type("Enc", (), {"blocks": [block]})())
    block(x).square().sum().backward()
    scale = float(ref.abs().max())
    np.testing.assert_allclose(block.attn.qkv.weight.grad.numpy(), ref.numpy(), atol=1e-5 * scale, rtol=0)
