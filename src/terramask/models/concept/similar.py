"""Find similar: example objects -> every object like them, with the SAM-family model
already loaded (no extra weights; works with SAM, MobileSAM, SAM 2.1 and their ONNX runtimes).

1. **Prototypes** (:func:`~terramask.models.concept.prototypes.build_prototypes`, once per
   scene): each exemplar's mask pooled over the encoder's feature cells into one unit
   vector (:mod:`terramask.models.concept.prototypes`; the cell maths:
   :mod:`terramask.models.concept.feature_pooling`); examples are positive prototypes of
   their class, counter-examples and the background negative ones.
2. **Peaks** (:meth:`SimilarFinder.find`, per tile): every cell is scored by its cosine
   similarity with each class's closest positive prototype; cells that are a 3 x 3 local
   maximum, reach ``similarity`` and are closer to a positive than to every negative
   become point prompts at the cell centre, best first.
3. **Decode** the prompts in batches of :data:`POINT_BATCH` (``decode_points``: SAM's 3
   candidates each), skipping peaks that a mask already kept covers, until ``max_points``
   prompts are decoded (so one large object cannot use up the budget); each
   candidate's low-res mask is pooled onto the cells the same way as the exemplars, and
   the candidate closest to its class (near-ties within :data:`SIMILARITY_TIE`: the one
   with the highest predicted IoU) is kept if its similarity reaches ``similarity`` and
   beats every negative prototype (``min_iou`` drops candidates the mask head itself
   does not believe).
4. Survivors are upsampled to the image grid, empty masks dropped, and duplicates
   removed by box NMS within each class.

Frames: masks, points and boxes are pixels of the image given to ``find`` (``tile``
frame, ``x=col, y=row``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from terramask.core.boxes import mask_to_box, per_class_nms
from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Backend, Embedding, FeatureGrid
from terramask.models.concept.base import CLASS_COLUMN, ConceptQuery
from terramask.models.concept.feature_pooling import centre, low_res_coverage, pool, unit_features
from terramask.models.concept.prototypes import (
    BACKGROUND,
    Exemplar,
    ExemplarImage,
    Prototypes,
    build_prototypes,
    check_backend,
)

__all__ = ["BACKGROUND", "DEFAULT_MAX_POINTS", "DEFAULT_SIMILARITY", "Exemplar", "ExemplarImage", "Prototypes",
           "SimilarFinder", "build_prototypes", "check_backend", "local_peaks"]

log = logging.getLogger(__name__)

DEFAULT_SIMILARITY = 0.6
"""Cosine similarity a cell and a mask must reach (``--similarity``)."""
DEFAULT_MAX_POINTS = 64
#: prompts decoded per batch; cells covered by masks kept so far are not prompted again
POINT_BATCH = 16
#: candidates of one prompt this close in similarity count as equally similar
SIMILARITY_TIE = 0.02
#: masks decoded and upsampled per call (bounds the float32 logits held at once)
UPSCALE_CHUNK = 8


def local_peaks(score: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: cells at least as high as their 8 neighbours."""
    padded = np.pad(score, 1, mode="constant", constant_values=-np.inf)
    h, w = score.shape
    peak = np.ones_like(score, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            peak &= score >= padded[dy : dy + h, dx : dx + w]
    return peak


@dataclass
class _Scores:
    """Per-class best positive similarity and best negative similarity of some vectors."""

    positive: np.ndarray  # (N, K)
    negative: np.ndarray  # (N,)


def _similarities(vectors: np.ndarray, protos: Prototypes) -> _Scores:
    """``vectors (N, C)`` unit rows against the prototypes."""
    index = protos.class_index()
    pos_sim = vectors @ protos.positive.T  # (N, P+)
    per_class = np.full((len(vectors), len(protos.names)), -np.inf, dtype=np.float32)
    for k in range(len(protos.names)):
        per_class[:, k] = pos_sim[:, index == k].max(axis=1)
    neg = protos.negative
    negative = (vectors @ neg.T).max(axis=1) if len(neg) else np.full(len(vectors), -np.inf, dtype=np.float32)
    return _Scores(per_class, negative)


class SimilarFinder:
    """Find objects like the exemplars with a SAM-family ``backend`` (a
    :class:`~terramask.models.concept.base.ConceptBackend`).

    ``prototypes``: built once per scene by :func:`build_prototypes`; without them,
    ``find`` builds them from the query's exemplar boxes in the image it is given.
    ``similarity``: cosine similarity a cell (to become a prompt) and a mask (to be kept)
    must reach; ``max_points``: prompts per image; ``nms_thresh``: box IoU above which
    masks of one class are duplicates; ``min_iou``: the mask head's predicted IoU a
    candidate needs.
    """

    def __init__(self, backend: Backend, prototypes: Prototypes | None = None, *,
                 similarity: float = DEFAULT_SIMILARITY, max_points: int = DEFAULT_MAX_POINTS,
                 nms_thresh: float = 0.7, min_iou: float = 0.0) -> None:
        check_backend(backend)
        if not -1.0 <= float(similarity) <= 1.0:
            raise InputError(f"--similarity must be a cosine similarity in [-1, 1], got {similarity}")
        if int(max_points) < 1:
            raise InputError(f"max_points must be >= 1, got {max_points}")
        if not 0.0 < nms_thresh <= 1.0:
            raise InputError(f"nms_thresh must be in (0, 1], got {nms_thresh}")
        self.backend = backend
        self.prototypes = prototypes
        self.similarity = float(similarity)
        self.max_points = int(max_points)
        self.nms_thresh = float(nms_thresh)
        self.min_iou = float(min_iou)
        self.name = f"similar:{getattr(backend, 'name', type(backend).__name__)}"

    def describe(self) -> dict:
        return {"route": "find-similar", "model": getattr(self.backend, "name", None), "similarity": self.similarity,
                "max_points": self.max_points, "nms_thresh": self.nms_thresh, "min_iou": self.min_iou,
                "prototypes": None if self.prototypes is None else self.prototypes.describe()}

    def find(self, image: GeoImage | np.ndarray, query: ConceptQuery | None = None) -> MaskSet:
        """Every object like the exemplars in ``image``: a :class:`MaskSet` with ``scores``
        (similarity), ``class`` and ``predicted_iou`` columns and ``point_coords`` (the prompt)."""
        if query is not None and query.phrases:
            raise PromptError("find-similar takes exemplars, not phrases; use a text route for "
                              f"{', '.join(repr(p) for p in query.phrases)}")
        embedding = self.backend.set_image(image)
        protos = self.prototypes
        if protos is None:
            protos = self._query_prototypes(image, embedding, query)
        return self.find_in(embedding, protos)

    def _query_prototypes(self, image: GeoImage | np.ndarray, embedding: Embedding,
                          query: ConceptQuery | None) -> Prototypes:
        if query is None or not len(query.exemplar_boxes):
            raise PromptError("find-similar needs exemplars: build prototypes first or give exemplar boxes")
        exemplars = []
        for i, (box, label) in enumerate(zip(query.exemplar_boxes, query.exemplar_labels.tolist(), strict=True)):
            result = self.backend.predict(embedding, Prompts(boxes=box[None], frame="tile"), multimask=False)
            exemplars.append(Exemplar(label=int(label), cls=query.exemplar_class, mask=result.masks[0],
                                      where=f"exemplar box {i + 1}"))
        return build_prototypes(self.backend, [ExemplarImage(image, exemplars)])

    def find_in(self, embedding: Embedding, protos: Prototypes) -> MaskSet:
        """:meth:`find` on an embedding already computed by the backend."""
        grid = self.backend.feature_map(embedding)  # type: ignore[attr-defined]
        unit = unit_features(grid)
        if protos.center is not None and unit.shape[0] == len(protos.center):
            unit = centre(unit, protos.center)
        if unit.shape[0] != protos.vectors.shape[1]:
            raise ModelError(f"prototypes of model {protos.model!r} have {protos.vectors.shape[1]} channels; "
                             f"this model's features have {unit.shape[0]}")
        cells, classes = self._peaks(unit, protos)
        kept = self._decode_rounds(embedding, unit, grid, protos, cells, classes)
        rows, cols = embedding.image_size
        georef = {"transform": embedding.extras.get("transform"), "crs": embedding.extras.get("crs")}
        if kept is None:
            return MaskSet(np.zeros((0, rows, cols), dtype=bool), extras=_columns([], [], np.zeros((0, 2))), **georef)
        low_res, iou, sims, cls, coords = kept
        masks = self._upscale(embedding, low_res)
        nonempty = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
        masks = masks[nonempty]
        boxes = mask_to_box(masks)
        sel = per_class_nms(boxes, sims[nonempty], cls[nonempty], self.nms_thresh)
        order, masks, boxes = nonempty[sel], masks[sel], boxes[sel]
        names = [protos.names[int(k)] for k in cls[order]]
        return MaskSet(masks, sims[order], boxes, extras=_columns(names, iou[order], coords[order]), **georef)

    def _peaks(self, unit: np.ndarray, protos: Prototypes) -> tuple[np.ndarray, np.ndarray]:
        """``(cells (B,) flat cell index, class index (B,))`` of the eligible peak cells, best first."""
        c, h, w = unit.shape
        scores = _similarities(unit.reshape(c, -1).T, protos)
        best_class = scores.positive.argmax(axis=1)
        best = scores.positive.max(axis=1)
        eligible = (best >= self.similarity) & (best > scores.negative)
        cells = np.flatnonzero(local_peaks(best.reshape(h, w)).reshape(-1) & eligible)
        cells = cells[np.argsort(-best[cells], kind="stable")]
        return cells, best_class[cells]

    def _decode_rounds(self, embedding: Embedding, unit: np.ndarray, grid: FeatureGrid, protos: Prototypes,
                       cells: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Decode peaks best first, :data:`POINT_BATCH` at a time, skipping cells that a mask
        already kept covers (by half or more), until ``max_points`` prompts are decoded.
        Returns the kept ``(low_res (N, L, L), iou (N,), similarity (N,), class (N,),
        coords (N, 2))`` or None."""
        w = unit.shape[2]
        ry, rx = grid.cell
        rows, cols = embedding.image_size
        covered = np.zeros(unit.shape[1] * w, dtype=bool)
        out: list[tuple[np.ndarray, ...]] = []
        decoded, pos = 0, 0
        while decoded < self.max_points and pos < len(cells):
            take: list[int] = []
            while pos < len(cells) and len(take) < min(POINT_BATCH, self.max_points - decoded):
                if not covered[cells[pos]]:
                    take.append(pos)
                pos += 1
            if not take:
                break
            picked = cells[take]
            coords = np.stack([np.minimum((picked % w + 0.5) * rx, cols - 0.5),
                               np.minimum((picked // w + 0.5) * ry, rows - 0.5)], axis=1).astype(np.float64)
            low_res, iou = self.backend.decode_points(  # type: ignore[attr-defined]
                embedding, coords[:, None, :], np.ones((len(take), 1), dtype=np.int64))
            decoded += len(take)
            keep, best, sims, cover = self._choose(unit, grid, protos, low_res, iou, classes[take])
            if keep.any():
                idx = np.flatnonzero(keep)
                covered |= (cover[idx] >= 0.5).any(axis=0)
                out.append((low_res[idx, best[idx]], iou[idx, best[idx]], sims[idx], classes[take][idx], coords[idx]))
        if not out:
            return None
        return tuple(np.concatenate(col, axis=0) for col in zip(*out, strict=True))

    def _choose(self, unit: np.ndarray, grid: FeatureGrid, protos: Prototypes, low_res: np.ndarray, iou: np.ndarray,
                classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per prompt: ``(kept (B,) bool, chosen candidate (B,), similarity (B,), cell
        coverage of the chosen candidate (B, h * w))``."""
        b, k = iou.shape
        cover = low_res_coverage(low_res.reshape(b * k, *low_res.shape[2:]), self.backend.mask_threshold,  # type: ignore[attr-defined]
                                 unit.shape[1:], grid.low_res_per_cell).reshape(b * k, -1)
        scores = _similarities(pool(unit, cover), protos)
        own = scores.positive[np.arange(b * k), np.repeat(classes, k)].reshape(b, k)
        ok = (cover.sum(axis=1).reshape(b, k) > 0) & (iou >= self.min_iou)
        own = np.where(ok, own, -np.inf)
        # near-ties in similarity (a part and the whole, one object and all alike) go to
        # the candidate the mask head believes most
        close = own >= own.max(axis=1, keepdims=True) - SIMILARITY_TIE
        best = np.where(close, iou, -np.inf).argmax(axis=1)
        sims = own[np.arange(b), best]
        negative = scores.negative.reshape(b, k)[np.arange(b), best]
        keep = np.isfinite(sims) & (sims >= self.similarity) & (sims > negative)
        chosen = cover.reshape(b, k, -1)[np.arange(b), best]
        return keep, best, np.where(np.isfinite(sims), sims, 0.0).astype(np.float32), chosen

    def _upscale(self, embedding: Embedding, low_res: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` bool masks on the image grid, upsampled a few at a time."""
        threshold = self.backend.mask_threshold  # type: ignore[attr-defined]
        out = [self.backend.upscale_logits(embedding, low_res[i : i + UPSCALE_CHUNK]) > threshold  # type: ignore[attr-defined]
               for i in range(0, len(low_res), UPSCALE_CHUNK)]
        return np.concatenate(out, axis=0)


def _columns(names: Sequence[str], predicted_iou, coords: np.ndarray) -> dict[str, np.ndarray]:
    n = len(names)
    return {CLASS_COLUMN: np.array(list(names), dtype=object).reshape(n),
            "predicted_iou": np.asarray(predicted_iou, dtype=np.float32).reshape(n),
            "point_coords": np.asarray(coords, dtype=np.float64).reshape(n, 1, 2)}
