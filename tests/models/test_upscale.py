"""The one windowed upscaler equals PyTorch's full bilinear chains cropped to the window:
SAM's (to 1024, crop to the resized input, to the image) and SAM 2's (straight to the
image), for both engines, windows anywhere (edges and corners included) and image sizes
smaller and larger than the model input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from terramask.models.sam.checkpoint import preprocess_shape  # noqa: E402
from terramask.models.upscale import WHOLE_FRACTION, Upscaler, axis_taps, bilinear_taps  # noqa: E402

F = torch.nn.functional
SIZES = [(1024, 1024), (600, 900), (37, 50), (300, 1300), (2048, 700)]


def _reference(low: np.ndarray, image_size, model_size):
    x = torch.from_numpy(low)[:, None]
    if model_size is not None:
        rows_in, cols_in = preprocess_shape(*image_size, model_size)
        x = F.interpolate(x, (model_size, model_size), mode="bilinear", align_corners=False)[..., :rows_in, :cols_in]
    return F.interpolate(x, image_size, mode="bilinear", align_corners=False)[:, 0].numpy()


def _windows(rows: int, cols: int):
    """Small, medium and whole windows; touching each edge and the corners."""
    return [
        (0, 0, cols, rows),
        (0, 0, max(1, cols // 7), max(1, rows // 9)),
        (cols - max(1, cols // 5), rows - max(1, rows // 6), cols, rows),
        (cols // 3, 0, cols // 3 + max(1, cols // 8), rows),
        (0, rows // 2, cols, rows // 2 + 1),
        (cols - 1, 0, cols, 1),
        (cols // 4, rows // 5, cols - cols // 3, rows - 1),
    ]


@pytest.mark.parametrize("model_size", [1024, None], ids=["sam", "sam2"])
@pytest.mark.parametrize("engine", ["torch", "numpy"])
@pytest.mark.parametrize("image_size", SIZES)
def test_windows_equal_the_full_bilinear_chain(image_size, engine, model_size):
    rows, cols = image_size
    low = np.random.default_rng(rows + cols).normal(0, 1, (3, 256, 256)).astype(np.float32)
    ref = _reference(low, image_size, model_size)
    input_size = preprocess_shape(rows, cols, 1024) if model_size else (1024, 1024)
    up = Upscaler(256, model_size, engine)
    for x0, y0, x1, y1 in _windows(rows, cols):
        out = up(low, image_size, input_size, (x0, y0, x1, y1))
        assert out.shape == (3, y1 - y0, x1 - x0) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref[:, y0:y1, x0:x1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(up(low, image_size, input_size), ref, atol=1e-5, rtol=0)


def test_small_windows_use_the_taps_and_large_ones_the_whole_chain(monkeypatch):
    """Both torch kernels are exercised: a window below WHOLE_FRACTION never runs the
    whole-image chain, one above it does (and both agree with the reference)."""
    up = Upscaler(256, 1024, "torch")
    calls = []
    whole = up.whole
    monkeypatch.setattr(up, "whole", lambda *a: calls.append(1) or whole(*a))
    low = np.random.default_rng(0).normal(0, 1, (2, 256, 256)).astype(np.float32)
    size, input_size = (600, 900), preprocess_shape(600, 900, 1024)
    up(low, size, input_size, (10, 10, 110, 110))
    assert calls == []
    side = int(np.ceil(np.sqrt(WHOLE_FRACTION * 600 * 900))) + 1
    up(low, size, input_size, (0, 0, side, side))
    assert calls == [1]


def test_many_masks_are_done_in_chunks_with_the_same_result():
    low = np.random.default_rng(3).normal(0, 1, (37, 256, 256)).astype(np.float32)
    up = Upscaler(256, None, "torch")
    out = up(low, (200, 300), (1024, 1024), (5, 6, 50, 70))
    np.testing.assert_allclose(out, _reference(low, (200, 300), None)[:, 6:70, 5:50], atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_size,out_size", [(256, 1024), (768, 300), (683, 2000), (5, 9), (1024, 1024)])
def test_bilinear_taps_reproduce_torch_interpolate(in_size, out_size):
    x = torch.as_tensor(np.random.default_rng(5).normal(0, 10, (2, 3, in_size)).astype(np.float32))
    ref = F.interpolate(x[:, :, None, :], (1, out_size), mode="bilinear", align_corners=False)[:, :, 0]
    idx, w = bilinear_taps(in_size, out_size)
    ours = x[..., idx[:, 0]] * torch.as_tensor(w[:, 0]) + x[..., idx[:, 1]] * torch.as_tensor(w[:, 1])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-4, rtol=1e-5)
    part_idx, part_w = bilinear_taps(in_size, out_size, out_size // 3, out_size // 2 + 1)
    np.testing.assert_array_equal(part_idx, idx[out_size // 3 : out_size // 2 + 1])
    np.testing.assert_array_equal(part_w, w[out_size // 3 : out_size // 2 + 1])


def test_composed_taps_read_few_consecutive_samples():
    idx, w = axis_taps(256, 1024, 683, 2000)
    assert idx.shape[1] <= 3 and (np.diff(idx, axis=1) >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
