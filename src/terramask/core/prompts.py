"""Prompts: points, boxes, prior mask logits and text, in a named frame (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.frames import FRAMES


def _points(a) -> np.ndarray:
    return np.asarray(a if a is not None else np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class Prompts:
    """Prompts for one image.

    - ``points``: ``(N, 2)`` float64 ``(x, y)`` in ``frame``; ``labels``: ``(N,)`` int64,
      1 = object, 0 = background.
    - ``boxes``: ``(M, 4)`` float64 xyxy in ``frame``. One box with points makes one
      query; several boxes make one query per box (points are then not allowed, as in SAM).
    - ``mask_logits``: optional ``(1, 256, 256)`` float32 low-resolution logits of a previous
      prediction (the model frame of the backend that produced them).
    - ``text``: optional text prompt for text-capable backends.
    - ``frame``: ``scene`` (pixels), ``world`` (``crs`` units), ``lonlat`` (EPSG:4326).
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    mask_logits: np.ndarray | None = None
    text: str | None = None
    frame: str = "scene"
    crs: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _points(self.points))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4))
        if self.frame not in FRAMES:
            raise PromptError(f"unknown prompt frame {self.frame!r}; use one of {', '.join(FRAMES)}")
        if len(self.points) != len(self.labels):
            raise PromptError(f"{len(self.points)} points but {len(self.labels)} labels")
        if np.any((self.labels != 0) & (self.labels != 1)):
            raise PromptError(f"point labels must be 1 (object) or 0 (background), got {sorted(set(self.labels.tolist()))}")
        if not np.all(np.isfinite(self.points)) or not np.all(np.isfinite(self.boxes)):
            raise PromptError("prompt coordinates must be finite numbers")
        for box in self.boxes:
            if box[2] <= box[0] or box[3] <= box[1]:
                raise PromptError(
                    f"box {box.tolist()} is empty or degenerate: need x1 > x0 and y1 > y0 (xyxy order)"
                )
        if len(self.boxes) > 1 and len(self.points):
            raise PromptError("several boxes cannot be combined with points; give one box, or boxes alone")
        if self.mask_logits is not None:
            logits = np.asarray(self.mask_logits, dtype=np.float32)
            if logits.ndim == 2:
                logits = logits[None]
            if logits.ndim != 3 or logits.shape[0] != 1:
                raise PromptError(f"prior mask logits must be (1, H, W), got shape {logits.shape}")
            object.__setattr__(self, "mask_logits", logits)

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0 and len(self.boxes) == 0 and self.mask_logits is None and not self.text

    def refine(self, points, labels, mask_logits: np.ndarray | None = None) -> "Prompts":
        """Prompts for the next round: earlier points kept, new points appended, and the
        previous best logits as prior mask (the reference notebook's refinement step,
        without forgetting the earlier points)."""
        new_points = _points(points)
        new_labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        return replace(
            self,
            points=np.concatenate([self.points, new_points]),
            labels=np.concatenate([self.labels, new_labels]),
            mask_logits=mask_logits if mask_logits is not None else self.mask_logits,
        )

    def to_dict(self) -> dict:
        """JSON-friendly description (no logits)."""
        return {
            "frame": self.frame,
            "crs": self.crs,
            "points": self.points.tolist(),
            "labels": self.labels.tolist(),
            "boxes": self.boxes.tolist(),
            "has_prior_mask": self.mask_logits is not None,
            "text": self.text,
        }
