"""MaskSet: N masks on one pixel grid, with columns of equal length (numpy only).

Modelled on supervision's single columnar result type. Required columns are
``masks`` ``(N, H, W)`` bool, ``scores`` ``(N,)`` float32 and ``boxes`` ``(N, 4)``
float64 xyxy in the grid's pixels; extra columns (``stability_score``,
``point_coords``, ``crop_box``, ``low_res_logits``, ``tile_index`` …) are arrays whose
first axis has length N. ``transform``/``crs`` georeference the grid.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from affine import Affine

from terramask.core.boxes import mask_to_box
from terramask.core.errors import InputError


class MaskSet:
    """Immutable columns of N masks on an ``(H, W)`` grid."""

    __slots__ = ("_masks", "_scores", "_boxes", "_extras", "transform", "crs")

    def __init__(
        self,
        masks: np.ndarray,
        scores: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
        transform: Affine | None = None,
        crs: str | None = None,
    ) -> None:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise InputError(f"masks must be (N, H, W), got shape {masks.shape}")
        n = masks.shape[0]
        scores = np.ones(n, dtype=np.float32) if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
        boxes = mask_to_box(masks) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        for name, col in [("scores", scores), ("boxes", boxes), *extras.items()]:
            if len(col) != n:
                raise InputError(f"column {name!r} has length {len(col)}, expected {n}")
        for arr in (masks, scores, boxes, *extras.values()):
            arr.setflags(write=False)
        self._masks, self._scores, self._boxes, self._extras = masks, scores, boxes, extras
        self.transform = transform if transform is not None else Affine.identity()
        self.crs = crs

    # -- columns -------------------------------------------------------------
    @property
    def masks(self) -> np.ndarray:
        return self._masks

    @property
    def scores(self) -> np.ndarray:
        return self._scores

    @property
    def boxes(self) -> np.ndarray:
        return self._boxes

    @property
    def extras(self) -> dict[str, np.ndarray]:
        return dict(self._extras)

    @property
    def shape(self) -> tuple[int, int]:
        """Grid ``(rows, cols)``."""
        return (int(self._masks.shape[1]), int(self._masks.shape[2]))

    @property
    def areas(self) -> np.ndarray:
        """``(N,)`` int64 pixel counts."""
        return self._masks.reshape(len(self), -1).sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return int(self._masks.shape[0])

    def __contains__(self, name: str) -> bool:
        return name in self._extras

    def __getitem__(self, key):
        """A column by name, or a new MaskSet for an int, slice, index array or bool mask."""
        if isinstance(key, str):
            if key in ("masks", "scores", "boxes"):
                return getattr(self, key)
            if key not in self._extras:
                raise KeyError(f"no column {key!r}; columns are masks, scores, boxes, {', '.join(self._extras)}")
            return self._extras[key]
        if isinstance(key, (int, np.integer)):
            key = [int(key)]
        return MaskSet(
            self._masks[key],
            self._scores[key],
            self._boxes[key],
            {k: v[key] for k, v in self._extras.items()},
            self.transform,
            self.crs,
        )

    def with_columns(self, **columns: np.ndarray) -> "MaskSet":
        """A copy with extra columns added or replaced."""
        extras = {**self._extras, **columns}
        return MaskSet(self._masks, self._scores, self._boxes, extras, self.transform, self.crs)

    def without_columns(self, *names: str) -> "MaskSet":
        extras = {k: v for k, v in self._extras.items() if k not in names}
        return MaskSet(self._masks, self._scores, self._boxes, extras, self.transform, self.crs)

    def sorted_by_score(self) -> "MaskSet":
        """Highest score first (stable for ties)."""
        return self[np.argsort(-self._scores, kind="stable")]

    @classmethod
    def empty(cls, shape: tuple[int, int], transform: Affine | None = None, crs: str | None = None) -> "MaskSet":
        return cls(np.zeros((0, *shape), dtype=bool), transform=transform, crs=crs)

    @classmethod
    def concat(cls, sets: Iterable["MaskSet"]) -> "MaskSet":
        """Stack mask sets on the same grid; extra columns must match in name."""
        sets = list(sets)
        if not sets:
            raise InputError("cannot concatenate zero mask sets")
        first = sets[0]
        for s in sets[1:]:
            if s.shape != first.shape:
                raise InputError(f"mask sets on different grids: {s.shape} vs {first.shape}")
            if set(s._extras) != set(first._extras):
                raise InputError(f"mask sets with different columns: {sorted(s._extras)} vs {sorted(first._extras)}")
        return cls(
            np.concatenate([s._masks for s in sets]),
            np.concatenate([s._scores for s in sets]),
            np.concatenate([s._boxes for s in sets]),
            {k: np.concatenate([s._extras[k] for s in sets]) for k in first._extras},
            first.transform,
            first.crs,
        )

    def __repr__(self) -> str:
        cols = ", ".join(["masks", "scores", "boxes", *self._extras])
        return f"MaskSet(n={len(self)}, grid={self.shape}, columns=[{cols}], crs={self.crs!r})"
