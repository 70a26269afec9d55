"""Automatic mask generation's two-stage decoding of single-point prompts on a SAM v1
backend (SAM ViT-B/L/H, MobileSAM), built on the one SAM decoder
(:mod:`terramask.models.sam.decoder`).

Automatic generation asks hundreds of single-point prompts about one image and keeps
only the outputs whose predicted IoU passes a threshold. The IoU depends only on the
transformer's output tokens, so :meth:`SamPointScorer.decode` runs the transformer on a
chunk of prompts, asks the caller's ``select(iou)`` which of the three multimask outputs
to keep, and forms low-res logits only for those (each prompt's image tokens upscaled
once). Results equal the backend's ``decode_points`` for the kept outputs (tested).
Upsampling to the image is the backend's ``upscale_logits`` (the protocol).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from terramask.models.base import Embedding
from terramask.models.sam import decoder as sam_decoder
from terramask.models.sam.backend import SamBackend


class SamPointScorer:
    """Two-stage single-point decoding on a :class:`SamBackend`, ``chunk`` prompts per
    transformer pass (small chunks keep the per-prompt image tensors, 4 MB each, in cache)."""

    def __init__(self, backend: SamBackend, chunk: int = 4) -> None:
        self.backend = backend
        self.chunk = max(1, int(chunk))

    def decode(
        self, embedding: Embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Decode single-point prompts ``coords (B, 2)`` float image pixels ``(x, y)``.

        ``select(iou (b, 3) float32) -> (b, 3) bool`` chooses the outputs to decode.
        Returns ``iou (B, 3)`` float32 (SAM's multimask outputs, in SAM's order),
        ``rows (K,)``, ``ks (K,)`` int64 (prompt index, output index 0..2, prompt-major)
        and ``low_res (K, 256, 256)`` float32 logits of the selected outputs.
        """
        backend = self.backend
        torch = backend._torch
        model = backend.model
        feats, state = backend._image(embedding)
        if state is None:  # the backend decodes with the official decoder: prepare here
            with torch.inference_mode():
                state = sam_decoder.image_state(model, feats, backend._dense_pe)
        xy = backend._to_model_frame(np.asarray(coords, dtype=np.float64).reshape(-1, 2), embedding)
        ious, rows_out, ks_out, lows = [], [], [], []
        with torch.inference_mode():
            for start in range(0, len(xy), self.chunk):
                part = torch.as_tensor(xy[start : start + self.chunk, None, :], device=backend.device)
                labels = torch.ones(part.shape[:2], dtype=torch.int64, device=backend.device)
                sparse, _ = model.prompt_encoder(points=(part, labels), boxes=None, masks=None)
                ts = sam_decoder.transformer(model, state, feats, sparse)
                iou = sam_decoder.iou_scores(model, ts)[:, 1:].float().cpu().numpy()
                keep = np.asarray(select(iou), dtype=bool).reshape(iou.shape)
                r, k = np.nonzero(keep)
                ious.append(iou)
                if r.size:
                    # multimask output k is mask token k + 1, at position k + 2 of the tokens
                    low = sam_decoder.selected_mask_logits(model, ts, torch.as_tensor(r), torch.as_tensor(k + 2))
                    lows.append(low.float().cpu().numpy())
                    rows_out.append(r + start)
                    ks_out.append(k)
        side = backend.arch.low_res
        iou_all = np.concatenate(ious) if ious else np.zeros((0, 3), np.float32)
        if not lows:
            return iou_all, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, side, side), np.float32)
        return iou_all, np.concatenate(rows_out), np.concatenate(ks_out), np.concatenate(lows)


def point_scorer_for(backend: object, chunk: int = 4) -> SamPointScorer | None:
    """A :class:`SamPointScorer` when ``backend`` is a :class:`SamBackend` (SAM,
    MobileSAM), else ``None`` (the caller then uses the backend's ``decode_points``)."""
    if not isinstance(backend, SamBackend):
        return None
    return SamPointScorer(backend, chunk=chunk)
