"""Where low-resolution mask logits land on the image grid.

SAM-family decoders return logits on an ``L x L`` grid (256) covering the padded
``S x S`` model input (1024); the backend's ``upscale_logits`` resizes them bilinearly
(``align_corners=False``) to ``S``, crops to the resized image ``input_size`` and resizes
to the image size. Bilinear values are convex combinations of their two nearest source
samples per axis, so an image pixel can exceed a threshold only near low-res pixels that
exceed it. :class:`LowResGeometry` turns that into pixel ranges, per axis:

- :meth:`LowResGeometry.out_range`: image pixels that *may* exceed a threshold given the
  low-res range that does (a superset, so windowed upsampling loses nothing);
- :meth:`LowResGeometry.low_range`: low-res samples that image pixels of a range depend on;
- :meth:`LowResGeometry.crossing_to_image`: a sub-pixel position on the intermediate
  ``S`` grid to image pixels (for box estimates from low-res logits).

All ranges are ``[lo, hi)`` end exclusive and include one pixel of safety margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AxisGeometry:
    """One axis: ``low`` low-res samples -> ``model`` intermediate samples (of which the
    first ``resized`` are kept) -> ``image`` pixels."""

    low: int
    model: int
    resized: int
    image: int

    @property
    def f(self) -> float:
        return self.model / self.low

    @property
    def valid_low(self) -> int:
        """Low-res samples covering the resized image (the rest covers padding)."""
        return min(self.low, int(math.ceil(self.resized / self.f)))

    def out_range(self, i0: int, i1: int) -> tuple[int, int]:
        """Image pixels that may exceed a threshold when only low-res samples
        ``i0..i1`` (inclusive) do."""
        f = self.f
        ma = math.floor(f * (i0 - 0.5) - 0.5) - 1
        mb = math.ceil(f * (i1 + 1.5) - 0.5) + 1
        ma, mb = max(ma, 0), min(mb, self.resized - 1)
        if mb < ma:
            return (0, 0)
        r = self.image / self.resized
        lo = math.floor((ma - 0.5) * r - 0.5) - 1
        hi = math.ceil((mb + 1.5) * r - 0.5) + 1
        lo, hi = max(lo, 0), min(hi, self.image)
        return (lo, hi) if hi > lo else (0, 0)

    def low_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Low-res samples that image pixels ``lo..hi-1`` are computed from."""
        if hi <= lo:
            return (0, 0)
        r = self.resized / self.image
        s_lo = max((lo + 0.5) * r - 0.5, 0.0)
        s_hi = max((hi - 0.5) * r - 0.5, 0.0)
        m_lo = max(math.floor(s_lo) - 1, 0)
        m_hi = min(math.floor(s_hi) + 2, self.resized - 1)
        g = 1.0 / self.f
        a = max(math.floor(max((m_lo + 0.5) * g - 0.5, 0.0)) - 1, 0)
        b = min(math.floor(max((m_hi + 0.5) * g - 0.5, 0.0)) + 2, self.low - 1)
        return (a, b + 1)

    def low_center(self, i: float) -> float:
        """Intermediate (model-grid) coordinate of low-res sample position ``i``."""
        return self.f * (i + 0.5) - 0.5

    def crossing_to_image(self, m: float) -> float:
        """Intermediate coordinate ``m`` -> image pixel coordinate (pixel centres at ints)."""
        m = min(max(m, 0.0), self.resized - 1.0)
        return (m + 0.5) * (self.image / self.resized) - 0.5


@dataclass(frozen=True)
class LowResGeometry:
    """Both axes of one embedded image: ``rows`` and ``cols`` :class:`AxisGeometry`."""

    rows: AxisGeometry
    cols: AxisGeometry

    @classmethod
    def of(cls, image_size: tuple[int, int], input_size: tuple[int, int], low: tuple[int, int], model_size: int) -> "LowResGeometry":
        return cls(
            AxisGeometry(int(low[0]), int(model_size), int(input_size[0]), int(image_size[0])),
            AxisGeometry(int(low[1]), int(model_size), int(input_size[1]), int(image_size[1])),
        )

    def window(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int] | None:
        """Image window ``(x0, y0, x1, y1)`` covering every pixel that may exceed a
        threshold when only low-res rows ``r0..r1`` and columns ``c0..c1`` do."""
        y0, y1 = self.rows.out_range(r0, r1)
        x0, x1 = self.cols.out_range(c0, c1)
        if y1 <= y0 or x1 <= x0:
            return None
        return (x0, y0, x1, y1)

    def low_window(self, window: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Low-res ``(c0, r0, c1, r1)`` (end exclusive) that ``window`` is computed from."""
        x0, y0, x1, y1 = window
        r0, r1 = self.rows.low_range(y0, y1)
        c0, c1 = self.cols.low_range(x0, x1)
        return (c0, r0, c1, r1)
