"""Running the staged SAM decoder export (:mod:`terramask.models.onnx.staged_graphs`) with
numpy around any runtime's sessions: the ONNX/OpenVINO counterpart of the PyTorch
backend's lean decoding (:mod:`terramask.models.sam.decoder` and
:mod:`terramask.models.sam.point_batches`), with equal results within float rounding.

A session is anything with ``run(None, feeds) -> [outputs in graph order]`` (an
onnxruntime ``InferenceSession`` or :class:`terramask.models.openvino.backend.CompiledGraph`).
Arrays are float32; coordinates are in the model frame, points already padded as SAM
pads them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class StagedState:
    """Per-image decoder inputs: ``src (1, N, C)``, ``k0``, ``v0`` ``(H, N, d)``, ``q0 (1, N, H*d)``."""

    src: np.ndarray
    k0: np.ndarray
    v0: np.ndarray
    q0: np.ndarray


class StagedSamDecoder:
    """The three staged graphs of one export: per-image state (kept for the last image),
    prompt tokens, and masks of chosen outputs only; ``low_res`` is the logits' side (256)."""

    def __init__(self, state: Any, tokens: Any, masks: Any, low_res: int) -> None:
        self.low_res = int(low_res)
        self._state_graph, self._tokens_graph, self._masks_graph = state, tokens, masks
        self._lock = threading.Lock()
        self._last: tuple[Any, StagedState] | None = None  # (features object, its state)

    def image_state(self, features_key: Any, features: np.ndarray) -> StagedState:
        """The state of ``features (1, C, h, w)``; ``features_key`` (the embedding's
        features object) identifies the image, so repeated clicks compute it once."""
        last = self._last
        if last is not None and last[0] is features_key:
            return last[1]
        src, k0, v0, q0 = self._state_graph.run(None, {"image_embeddings": features})
        state = StagedState(src, k0, v0, q0)
        with self._lock:
            self._last = (features_key, state)
        return state

    def tokens(self, state: StagedState, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``coords (B, P, 2)``, ``labels (B, P)`` -> ``iou (B, M)``, ``hyper (B, M, C/8)``,
        ``keys (B, N, C)`` (mask token order: index 0 the single-mask output)."""
        iou, hyper, keys = self._tokens_graph.run(None, {
            "src": state.src, "k0": state.k0, "v0": state.v0, "q0": state.q0,
            "point_coords": np.ascontiguousarray(coords, np.float32),
            "point_labels": np.ascontiguousarray(labels, np.float32),
        })
        return iou, hyper, keys

    def masks(self, keys: np.ndarray, hyper: np.ndarray) -> np.ndarray:
        """``keys (U, N, C)``, ``hyper (U, K, C/8)`` -> low-res logits ``(U, K, 4h, 4w)``."""
        (low,) = self._masks_graph.run(None, {
            "keys": np.ascontiguousarray(keys, np.float32), "hyper": np.ascontiguousarray(hyper, np.float32)
        })
        return low

    def decode(self, state: StagedState, coords: np.ndarray, labels: np.ndarray, tokens: slice) -> tuple[np.ndarray, np.ndarray]:
        """Low-res logits ``(B, K, 4h, 4w)`` and IoU ``(B, K)`` of mask tokens ``tokens``
        (``slice(1, 4)``: the multimask outputs; ``slice(0, 1)``: the single mask)."""
        iou, hyper, keys = self.tokens(state, coords, labels)
        return self.masks(keys, hyper[:, tokens]), iou[:, tokens]

    def selected(self, state: StagedState, coords: np.ndarray, labels: np.ndarray,
                 select: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Two-stage decode of ``B`` prompts (:meth:`SamPointScorer.decode`'s contract for
        one chunk): ``select(iou (B, 3)) -> (B, 3) bool`` picks multimask outputs; returns
        ``iou (B, 3)``, ``rows``, ``ks`` (prompt-major) and ``low (K, 4h, 4w)`` of those."""
        iou4, hyper, keys = self.tokens(state, coords, labels)
        iou = np.ascontiguousarray(iou4[:, 1:], np.float32)
        keep = np.asarray(select(iou), dtype=bool).reshape(iou.shape)
        rows, ks = np.nonzero(keep)
        if rows.size == 0:
            return iou, rows, ks, np.zeros((0, self.low_res, self.low_res), np.float32)
        uniq, slot = _slots(rows)
        packed = np.zeros((len(uniq), int(slot.max()) + 1, hyper.shape[-1]), np.float32)
        packed[np.searchsorted(uniq, rows), slot] = hyper[rows, ks + 1]
        low = self.masks(keys[uniq] if len(uniq) < len(keys) else keys, packed)
        return iou, rows, ks, low[np.searchsorted(uniq, rows), slot]


def _slots(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct prompts of ``rows`` (sorted, prompt-major as ``np.nonzero`` gives them) and
    each entry's position among its prompt's entries."""
    uniq, first, counts = np.unique(rows, return_index=True, return_counts=True)
    slot = np.arange(len(rows)) - np.repeat(first, counts)
    return uniq, slot
