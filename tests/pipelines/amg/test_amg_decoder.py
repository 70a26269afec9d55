"""The shared SAM decoder (transformer, then masks of selected outputs only), the AMG
point scorer built on it, and the windowed upsampling equal the official computation."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.tiny_sam import build_official_sam, write_sam_checkpoint
from terramask.models.base import Embedding
from terramask.pipelines.amg.geometry import LowResGeometry


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    path = write_sam_checkpoint(tmp_path_factory.mktemp("amgdec") / "tiny.pth", arch="tiny", seed=3)
    return path, build_official_sam(path)


@pytest.mark.slow
def test_selected_masks_of_the_shared_decoder_equal_official_decoder(tiny_sam):
    import torch

    from terramask.models.sam import decoder

    _, sam = tiny_sam
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 256, 64, 64, generator=g)
    coords = torch.rand(6, 2, 2, generator=g) * 1024
    labels = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0], [1, 1], [1, 0]])
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low, iou = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        state = decoder.image_state(sam, emb, sam.prompt_encoder.get_dense_pe())
        ts = decoder.transformer(sam, state, emb, sparse)
        ours_iou = decoder.iou_scores(sam, ts)
        # only some masks, in any order: each prompt is upsampled once; multimask output
        # k is mask token k + 1, token k + 2 of the transformer output
        rows = torch.tensor([0, 0, 2, 5, 5, 5, 3])
        outs = torch.tensor([0, 2, 1, 0, 1, 2, 2])
        ours = decoder.selected_mask_logits(sam, ts, rows, outs + 2)
        whole, whole_iou = decoder.decode(sam, state, emb, sparse, None, multimask=True)
    np.testing.assert_allclose(ours_iou[:, 1:].numpy(), iou.numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(whole_iou.numpy(), iou.numpy(), atol=2e-5, rtol=0)
    ref = low[rows, outs]
    scale = float(ref.abs().max())
    assert scale > 10  # the scaled test decoder gives logits far from zero
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=2e-5 * scale, rtol=0)
    assert ((ours > 0) != (ref > 0)).float().mean() < 1e-4
    np.testing.assert_allclose(whole.numpy(), low.numpy(), atol=2e-5 * scale, rtol=0)


@pytest.mark.slow
def test_point_scorer_decodes_only_selected_outputs(tiny_sam):

    from terramask.models.sam.backend import SamBackend
    from terramask.models.sam.point_batches import point_scorer_for

    path, sam = tiny_sam
    backend = SamBackend.from_checkpoint(path)
    scorer = point_scorer_for(backend)
    assert scorer is not None
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    embedding = backend.set_image(rgb)
    coords = np.array([[10.0, 20.0], [100.5, 60.25], [64.0, 48.0]])
    seen = []

    def select(iou):
        seen.append(iou.copy())
        keep = np.zeros(iou.shape, bool)
        keep[1, 2] = keep[2, 0] = True
        return keep

    iou, rows, ks, low = scorer.decode(embedding, coords, select)
    ref_low, ref_iou = backend.decode_points(embedding, coords[:, None, :], np.ones((3, 1), np.int64))
    np.testing.assert_allclose(iou, ref_iou, atol=2e-5)
    assert rows.tolist() == [1, 2] and ks.tolist() == [2, 0]
    scale = float(np.abs(ref_low).max())
    np.testing.assert_allclose(low, ref_low[[1, 2], [2, 0]], atol=2e-5 * scale)
    assert point_scorer_for(object()) is None


@pytest.mark.parametrize("image_size", [(1024, 1024), (160, 224), (300, 1300), (37, 50)])
def test_upscaler_equals_sam_postprocess(image_size):
    import torch

    from terramask.models.sam.backend import preprocess_shape
    from terramask.models.upscale import Upscaler

    h, w = image_size
    input_size = preprocess_shape(h, w, 1024)
    low = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(1)) * 20
    x = torch.nn.functional.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    x = torch.nn.functional.interpolate(x, (h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
    emb = Embedding("m", None, (h, w), input_size)
    up = Upscaler(256, 1024)
    np.testing.assert_allclose(up(low[:, 0].numpy(), emb.image_size, emb.input_size), x, atol=5e-4)
    win = (w // 5, h // 4, w - w // 3, h - 1)
    np.testing.assert_allclose(up(low[:, 0].numpy(), emb.image_size, emb.input_size, win), x[:, win[1] : win[3], win[0] : win[2]], atol=5e-4)


@pytest.mark.parametrize("image_size", [(1024, 1024), (160, 224), (300, 1300), (37, 50), (2048, 700)])
def test_windows_contain_every_pixel_above_the_threshold(image_size):
    """Low-res logits that exceed the threshold only in a small blob: the upsampled
    logits exceed it only inside the computed window, and the low-res window the
    upsampling reads suffices (filling the rest changes nothing inside the window)."""

    from terramask.models.sam.backend import preprocess_shape
    from terramask.models.upscale import Upscaler

    h, w = image_size
    input_size = preprocess_shape(h, w, 1024)
    emb = Embedding("m", None, (h, w), input_size)
    geom = LowResGeometry.of((h, w), input_size, (256, 256), 1024)
    up = Upscaler(256, 1024)
    rng = np.random.default_rng(7)
    for _ in range(12):
        low = np.full((256, 256), -5.0, np.float32) + rng.normal(0, 0.5, (256, 256)).astype(np.float32)
        r0 = int(rng.integers(0, geom.rows.valid_low))
        c0 = int(rng.integers(0, geom.cols.valid_low))
        r1 = min(r0 + int(rng.integers(0, 6)), 255)
        c1 = min(c0 + int(rng.integers(0, 6)), 255)
        low[r0 : r1 + 1, c0 : c1 + 1] = rng.uniform(0.5, 30, (r1 - r0 + 1, c1 - c0 + 1))
        full = up(low[None], emb.image_size, emb.input_size)[0]
        window = geom.window(r0, r1, c0, c1)
        if window is None:
            assert not (full > 0).any()
            continue
        x0, y0, x1, y1 = window
        outside = full.copy()
        outside[y0:y1, x0:x1] = -1
        assert not (outside > 0).any()
        lc0, lr0, lc1, lr1 = geom.low_window(window)
        other = np.full_like(low, 123.0)
        other[lr0:lr1, lc0:lc1] = low[lr0:lr1, lc0:lc1]
        np.testing.assert_allclose(up(other[None], emb.image_size, emb.input_size, window)[0], full[y0:y1, x0:x1], atol=1e-4)
