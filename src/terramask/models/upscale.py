"""Low-resolution mask logits -> image logits: the one windowed bilinear upscaler.

Every SAM-family backend turns the decoder's ``(L, L)`` low-resolution logits (``L`` =
256) into logits on the image grid with a chain of bilinear resizes
(``F.interpolate(..., mode="bilinear", align_corners=False)``):

- SAM / MobileSAM (``model_size`` = 1024): to ``model_size x model_size``, crop to the
  resized input ``input_size`` (the unpadded image), then to the image ``(rows, cols)``;
- SAM 2 (``model_size=None``): straight to the image ``(rows, cols)``.

Both chains are linear and separable, so along each axis they compose into one map in
which every output pixel reads at most 3 consecutive low-res samples
(:func:`axis_taps`). :class:`Upscaler` evaluates that map only inside a window (the box
where a mask can be), at a few operations per output pixel and without any
``model_size``-sized intermediate; windows larger than :data:`WHOLE_FRACTION` of the
image run the whole chain instead (PyTorch's kernel, faster there). Results equal the
full ``F.interpolate`` chain cropped to the window within float32 rounding (tested to
1e-5 of the logits' scale).

Two engines: ``torch`` (tensors on the backend's device, PyTorch's thread settings) and
``numpy`` (no torch at run time, for ONNX Runtime: the composed maps as dense matrices,
two matrix products).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

#: Windows covering more than this fraction of the image are computed with the
#: whole-image chain and cropped (the torch engine); smaller ones with the composed taps.
#: Measured on 8 masks, 1 thread, images 600x800 to 1500x1500: the taps take 10-20 % of
#: the whole chain's time at 0.1, 20-50 % at 0.3, and are slower from ~0.45 on.
WHOLE_FRACTION = 0.3

#: Masks upsampled together (bounds the temporary memory to ``CHUNK`` float images).
CHUNK = 16


def bilinear_taps(in_size: int, out_size: int, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of PyTorch's bilinear resize (``align_corners=False``).

    For outputs ``start .. stop-1`` of a resize from ``in_size`` to ``out_size`` along one
    axis, returns ``idx (n, 2) int64`` and ``w (n, 2) float32`` with
    ``out[o] = w[o, 0] * in[idx[o, 0]] + w[o, 1] * in[idx[o, 1]]``. The arithmetic follows
    ``aten/src/ATen/native/UpSample.h``: float32 ``scale = in / out``, source index
    ``scale * (o + 0.5) - 0.5`` rounded once to float32 (the kernel's fused multiply-add;
    this reproduces its weights bit for bit), clamped at 0, upper neighbour clamped to the
    last input.
    """
    stop = out_size if stop is None else stop
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    dst = np.arange(start, stop, dtype=np.float64)
    src = np.maximum((scale * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    l0 = (np.float32(1.0) - l1).astype(np.float32)
    return np.stack([i0, i1], axis=1), np.stack([l0, l1], axis=1)


def _stage_matrix(in_size: int, out_size: int, start: int, stop: int) -> np.ndarray:
    """Outputs ``start..stop-1`` of the bilinear resize ``in_size -> out_size`` as a dense
    ``(stop - start, in_size)`` float64 matrix."""
    idx, w = bilinear_taps(in_size, out_size, start, stop)
    m = np.zeros((stop - start, in_size), dtype=np.float64)
    rows = np.arange(stop - start)
    np.add.at(m, (rows, idx[:, 0]), w[:, 0].astype(np.float64))
    np.add.at(m, (rows, idx[:, 1]), w[:, 1].astype(np.float64))
    return m


def axis_matrix(low: int, model_size: int | None, kept: int, out: int) -> np.ndarray:
    """One axis of the chain as a dense ``(out, low)`` float64 matrix: SAM's
    ``low -> model_size``, keep the first ``kept``, ``kept -> out``; SAM 2's
    (``model_size=None``) ``low -> out``."""
    if model_size is None:
        return _stage_matrix(low, out, 0, out)
    first = _stage_matrix(low, model_size, 0, kept)  # (kept, low)
    return _stage_matrix(kept, out, 0, out) @ first


@lru_cache(maxsize=64)
def axis_taps(low: int, model_size: int | None, kept: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """The composed map of one axis as compact taps: ``idx (out, T) int64`` (consecutive
    low-res indices, clamped to ``low - 1``) and ``w (out, T) float32`` (0 past the end),
    ``out[o] = sum_t w[o, t] * low[idx[o, t]]``; ``T`` <= 3 for upsampling chains."""
    m = axis_matrix(low, model_size, kept, out)
    nz = m != 0
    has = nz.any(1)
    first = np.where(has, nz.argmax(1), 0)
    last = np.where(has, low - 1 - nz[:, ::-1].argmax(1), 0)
    taps = int((last - first).max()) + 1
    span = first[:, None] + np.arange(taps)[None, :]
    idx = np.minimum(span, low - 1)
    w = np.take_along_axis(m, idx, axis=1)
    w[span > low - 1] = 0.0
    idx, w32 = idx.astype(np.int64), w.astype(np.float32)
    idx.setflags(write=False)  # cached: shared by every caller
    w32.setflags(write=False)
    return idx, w32


@lru_cache(maxsize=64)
def _axis_matrix32(low: int, model_size: int | None, kept: int, out: int) -> np.ndarray:
    m = axis_matrix(low, model_size, kept, out).astype(np.float32)
    m.setflags(write=False)
    return m


class Upscaler:
    """Upsample ``(N, L, L)`` low-res logits to the image grid, or only inside a window.

    ``low``: side ``L`` of the low-res logits; ``model_size``: SAM's square model input
    (1024) or ``None`` for SAM 2's direct resize; ``engine``: ``"torch"`` (``device`` is
    where the work runs) or ``"numpy"``.
    """

    def __init__(self, low: int, model_size: int | None, engine: str = "torch", device: Any = "cpu") -> None:
        if engine not in ("torch", "numpy"):
            raise ValueError(f"engine must be torch or numpy, got {engine!r}")
        self.low = int(low)
        self.model_size = None if model_size is None else int(model_size)
        self.engine = engine
        self.device = device

    def __call__(
        self,
        low_res: np.ndarray,
        image_size: tuple[int, int],
        input_size: tuple[int, int],
        window: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """``low_res (N, L, L)`` float32 -> logits ``(N, y1 - y0, x1 - x0)`` float32 (numpy).

        ``image_size``/``input_size``: ``(rows, cols)`` of the image and of the resized
        model input (SAM; ignored for SAM 2); ``window = (x0, y0, x1, y1)`` end exclusive
        in image pixels, already checked (:func:`terramask.models.base.upscale_arguments`);
        ``None`` = the whole image.
        """
        rows, cols = (int(v) for v in image_size)
        box = window if window is not None else (0, 0, cols, rows)
        n = low_res.shape[0]
        if n <= CHUNK:  # the common case (a click, AMG's per-mask finish): no output copy
            return self._chunk(low_res, (rows, cols), input_size, box)
        x0, y0, x1, y1 = box
        out = np.empty((n, y1 - y0, x1 - x0), dtype=np.float32)
        for s in range(0, n, CHUNK):
            out[s : s + CHUNK] = self._chunk(low_res[s : s + CHUNK], (rows, cols), input_size, box)
        return out

    def _chunk(self, low_res: np.ndarray, image_size: tuple[int, int], input_size: tuple[int, int],
               window: tuple[int, int, int, int]) -> np.ndarray:
        """At most :data:`CHUNK` masks through the engine that suits the window; the result
        may be a view of a larger array (the whole image cropped to the window)."""
        if self.engine == "numpy":
            return self._numpy(low_res, image_size, input_size, window)
        from terramask.models.torch_utils import torch_module

        rows, cols = image_size
        x0, y0, x1, y1 = window
        with torch_module().inference_mode():
            if (x1 - x0) * (y1 - y0) > WHOLE_FRACTION * rows * cols:
                res = self.whole(self._tensor(low_res), image_size, input_size)[:, y0:y1, x0:x1]
            else:
                res = self._taps(self._tensor(low_res), image_size, input_size, window)
            return res.cpu().numpy()

    def whole(self, low_res: Any, image_size: tuple[int, int], input_size: tuple[int, int]) -> Any:
        """The whole chain on a torch tensor ``(N, L, L)`` -> ``(N, rows, cols)`` exactly as
        the official post-processing computes it (``F.interpolate``, one channel per mask:
        PyTorch's CPU kernel is about twice as fast for ``(N, 1, h, w)`` as for ``(1, N, h, w)``)."""
        from terramask.models.torch_utils import torch_module

        F = torch_module().nn.functional
        x = low_res[:, None]
        size = (int(image_size[0]), int(image_size[1]))
        if self.model_size is not None:
            rows_in, cols_in = (int(v) for v in input_size)
            x = F.interpolate(x, (self.model_size, self.model_size), mode="bilinear", align_corners=False)
            x = x[..., :rows_in, :cols_in]
            if (rows_in, cols_in) == size:
                return x[:, 0]
        return F.interpolate(x, size, mode="bilinear", align_corners=False)[:, 0]

    # -- engines ------------------------------------------------------------------------
    def _kept(self, input_size: tuple[int, int]) -> tuple[int, int]:
        if self.model_size is None:
            return self.low, self.low
        return int(input_size[0]), int(input_size[1])

    def _tensor(self, arr: np.ndarray) -> Any:
        from terramask.models.torch_utils import torch_module

        torch = torch_module()
        if isinstance(arr, torch.Tensor):
            return arr.to(self.device, torch.float32)
        arr = np.asarray(arr, dtype=np.float32)
        return torch.as_tensor(arr if arr.flags.writeable else arr.copy(), device=self.device)

    def _taps(self, low_res: Any, image_size, input_size, window) -> Any:
        """Composed taps, columns then rows, reading only the low-res rectangle needed."""
        from terramask.models.torch_utils import torch_module

        torch = torch_module()
        (rows, cols), (kept_r, kept_c) = image_size, self._kept(input_size)
        x0, y0, x1, y1 = window
        ir, wr = axis_taps(self.low, self.model_size, kept_r, rows)
        ic, wc = axis_taps(self.low, self.model_size, kept_c, cols)
        ir, wr, ic, wc = ir[y0:y1], wr[y0:y1], ic[x0:x1], wc[x0:x1]
        a, b, c, d = int(ir.min()), int(ir.max()) + 1, int(ic.min()), int(ic.max()) + 1
        dev = low_res.device
        with torch.inference_mode():
            low = low_res[:, a:b, c:d]
            icol = torch.from_numpy(ic - c).to(dev)
            wcol = torch.tensor(wc, device=dev)
            tmp = low[:, :, icol[:, 0]] * wcol[:, 0]
            for t in range(1, icol.shape[1]):
                tmp += low[:, :, icol[:, t]] * wcol[:, t]
            irow = torch.from_numpy(ir - a).to(dev)
            wrow = torch.tensor(wr, device=dev)
            out = tmp[:, irow[:, 0], :] * wrow[:, 0, None]
            for t in range(1, irow.shape[1]):
                out += tmp[:, irow[:, t], :] * wrow[:, t, None]
        return out

    def _numpy(self, low_res: np.ndarray, image_size, input_size, window) -> np.ndarray:
        """Dense composed maps restricted to the window: ``Mr @ low @ Mc^T``."""
        (rows, cols), (kept_r, kept_c) = image_size, self._kept(input_size)
        x0, y0, x1, y1 = window
        ir, _ = axis_taps(self.low, self.model_size, kept_r, rows)
        ic, _ = axis_taps(self.low, self.model_size, kept_c, cols)
        a, b = int(ir[y0:y1].min()), int(ir[y0:y1].max()) + 1
        c, d = int(ic[x0:x1].min()), int(ic[x0:x1].max()) + 1
        mr = _axis_matrix32(self.low, self.model_size, kept_r, rows)[y0:y1, a:b]
        mc = _axis_matrix32(self.low, self.model_size, kept_c, cols)[x0:x1, c:d]
        arr = np.asarray(low_res, dtype=np.float32)[:, a:b, c:d]
        return np.matmul(np.matmul(mr, arr), mc.T).astype(np.float32, copy=False)
