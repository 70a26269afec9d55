"""Radiometric stretch to 8 bits (numpy only).

Statistics are computed once per scene (DESIGN.md) and applied to every tile, so tiles
of one scene look alike. Nodata pixels are ignored in the statistics and become 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terramask.core.errors import InputError


@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch ``[low, high] -> [0, 255]``.

    ``low`` and ``high`` hold one value per band of the *scene* (0-based band order).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = (2.0, 98.0)

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: dict) -> "Stretch":
        return cls(tuple(d["low"]), tuple(d["high"]), tuple(d.get("percentiles", (2.0, 98.0))))


def validate_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(p) for p in percentiles)
    if not (0.0 <= lo < hi <= 100.0):
        raise InputError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
    return lo, hi


def compute_stretch(
    pixels: np.ndarray, valid: np.ndarray | None = None, percentiles: tuple[float, float] = (2.0, 98.0)
) -> Stretch:
    """Per-band percentile clip of ``(bands, rows, cols)`` pixels.

    ``valid`` is an optional ``(rows, cols)`` bool mask of non-nodata pixels. A band with
    no valid pixel, or a constant band, gets a unit-wide range so it maps to 0 rather
    than dividing by zero. NaN values are ignored.
    """
    lo_p, hi_p = validate_percentiles(percentiles)
    lows, highs = [], []
    for band in pixels:
        values = band[valid] if valid is not None else band.ravel()
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            lows.append(0.0)
            highs.append(1.0)
            continue
        low, high = np.percentile(values, [lo_p, hi_p])
        if high <= low:
            high = low + 1.0
        lows.append(float(low))
        highs.append(float(high))
    return Stretch(tuple(lows), tuple(highs), (lo_p, hi_p))


def apply_stretch(pixels: np.ndarray, stretch: Stretch, bands: tuple[int, ...]) -> np.ndarray:
    """``(len(bands), rows, cols)`` pixels -> same-shape uint8, using scene band indices
    ``bands`` (0-based) to pick each band's range."""
    out = np.empty(pixels.shape, dtype=np.uint8)
    for i, b in enumerate(bands):
        low, high = stretch.low[b], stretch.high[b]
        scaled = (pixels[i].astype(np.float32) - low) * (255.0 / (high - low))
        np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255, out=scaled)
        out[i] = np.round(scaled).astype(np.uint8)
    return out
