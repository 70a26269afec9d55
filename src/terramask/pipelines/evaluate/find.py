"""Find mode of an evaluation (``terramask eval --mode find``): instance detection quality.

Per image, the finder returns instances with scores; they are matched one-to-one to the
labelled objects at IoU >= 0.5 (greedy, highest score first, each to the unmatched object
it overlaps most: the COCO / PASCAL VOC rule). Reported over the dataset:

- **precision, recall, F1** at IoU 0.5 of all returned instances;
- **AP50**: area under the precision-recall curve of the instances ranked by score over
  all images (all-point interpolation: precision made monotone, VOC 2010+ / COCO without
  the 101-point sampling);
- **mean IoU of matched** instances (how good the masks that count are).

Two ways to say what to find:

- ``exemplars_per_image = N`` (find-similar): N labelled objects of each image (a seeded
  sample) are the exemplars; they are removed from the objects to find, and predictions
  that overlap them (IoU >= 0.5) are neither right nor wrong; an image with fewer than
  N + 1 objects is skipped;
- ``find_text = (PHRASE, ...)``: a concept backend (detector + SAM, SAM 3) finds the
  phrases; every object of the target class is to be found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terramask.core.maskset import MaskSet
from terramask.eval.datasets import Sample
from terramask.eval.metrics import instance_ious
from terramask.models.concept.base import ConceptQuery
from terramask.models.concept.similar import Exemplar, ExemplarImage, SimilarFinder, build_prototypes
from terramask.pipelines.evaluate.config import EvalConfig
from terramask.pipelines.evaluate.examples import ExampleKeeper, make_example

MATCH_IOU = 0.5


def match_instances(ious: np.ndarray, scores: np.ndarray, threshold: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching. ``ious (N, M)`` predictions x objects, ``scores (N,)``.

    Returns ``(matched (N,) int64: the object index of each prediction or -1, iou (N,)
    float64 of that match, 0 when unmatched)``; predictions are taken highest score first
    (ties: lower index) and each takes the unmatched object it overlaps most, if at least
    ``threshold``.
    """
    n, m = ious.shape
    matched = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n, dtype=np.float64)
    free = np.ones(m, dtype=bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if not free.any():
            break
        row = np.where(free, ious[i], -1.0)
        j = int(np.argmax(row))
        if row[j] >= threshold:
            matched[i], best[i] = j, row[j]
            free[j] = False
    return matched, best


def average_precision(scores: np.ndarray, hits: np.ndarray, n_objects: int) -> float | None:
    """All-point interpolated AP of predictions ``scores (K,)`` with ``hits (K,)`` bool
    (true positives) over ``n_objects`` labelled objects; None without objects."""
    if n_objects <= 0:
        return None
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.cumsum(np.asarray(hits, dtype=bool)[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / n_objects
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


@dataclass
class FindAccumulator:
    """Matched instances over many images (see the module docstring)."""

    n_images: int = 0
    n_objects: int = 0
    n_predicted: int = 0
    n_matched: int = 0
    iou_sum: float = 0.0
    scores: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)

    def update(self, matched: np.ndarray, match_iou: np.ndarray, scores: np.ndarray, n_objects: int) -> None:
        self.n_images += 1
        self.n_objects += int(n_objects)
        self.n_predicted += len(matched)
        hit = matched >= 0
        self.n_matched += int(hit.sum())
        self.iou_sum += float(match_iou[hit].sum())
        self.scores.extend(np.asarray(scores, dtype=np.float64).tolist())
        self.hits.extend(hit.tolist())

    def compute(self) -> dict:
        tp, n_pred, n_obj = self.n_matched, self.n_predicted, self.n_objects
        precision = None if n_pred == 0 else tp / n_pred
        recall = None if n_obj == 0 else tp / n_obj
        f1 = None if precision is None or recall is None else (0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
        return {
            "n_images": self.n_images, "n_objects": n_obj, "n_predicted": n_pred, "n_matched": tp,
            "precision@0.5": precision, "recall@0.5": recall, "f1@0.5": f1,
            "ap50": average_precision(np.array(self.scores), np.array(self.hits, dtype=bool), n_obj),
            "mean_matched_iou": None if tp == 0 else self.iou_sum / tp,
            "predicted_per_image": None if self.n_images == 0 else n_pred / self.n_images,
            "conventions": {"match": "one-to-one, greedy by score, IoU >= 0.5 (COCO/VOC)",
                            "ap50": "all-point interpolated area under the precision-recall curve"},
        }


def _exemplar_split(sample: Sample, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(exemplar object indices, indices of the objects to find)``: a seeded sample of ``n``."""
    rng = np.random.default_rng([seed, sum(sample.stem.encode())])
    order = rng.permutation(sample.n_instances)
    return np.sort(order[:n]), np.sort(order[n:])


def find_masks(backend: Any, sample: Sample, config: EvalConfig, exemplar_ids: np.ndarray) -> MaskSet:
    """The finder's instances in ``sample.image``: find-similar from the exemplar objects
    (``exemplar_ids``), or the concept backend with ``config.find_text``."""
    if config.find_text:
        return backend.find(sample.image, ConceptQuery(phrases=tuple(config.find_text)))
    exemplars = [Exemplar(mask=sample.instance_mask(int(i)), where=f"{sample.stem} object {int(i) + 1}")
                 for i in exemplar_ids]
    finder = SimilarFinder(backend, similarity=config.similarity, max_points=config.max_points)
    embedding = backend.set_image(sample.image)
    protos = build_prototypes(backend, [ExemplarImage(sample.image, exemplars, ~sample.ignore)])
    return finder.find_in(embedding, protos)


def find_image(backend: Any, name: str, sample: Sample, config: EvalConfig, acc: FindAccumulator, seed: int,
               keeper: ExampleKeeper) -> tuple[dict, float, np.ndarray] | None:
    """Find and score one image: ``(row for metrics.csv, seconds, found (T,) bool per object
    to find)``, or None when the image has too few objects to give
    ``config.exemplars_per_image`` exemplars and one to find."""
    n_ex = config.exemplars_per_image or 0
    if sample.n_instances < n_ex + 1:
        return None
    t0 = time.perf_counter()
    ex_ids, target_ids = _exemplar_split(sample, n_ex, seed) if n_ex else (np.zeros(0, np.int64),
                                                                             np.arange(sample.n_instances))
    found = find_masks(backend, sample, config, ex_ids)
    ious = instance_ious(sample.instances, found.masks, sample.ignore, n_instances=sample.n_instances)
    keep = np.ones(len(found), dtype=bool)
    if len(ex_ids):  # predictions of the exemplars themselves are not scored
        keep = ious[:, ex_ids].max(axis=1) < MATCH_IOU
    ious, scores = ious[keep][:, target_ids], found.scores[keep]
    matched, match_iou = match_instances(ious, scores)
    acc.update(matched, match_iou, scores, len(target_ids))
    dt = time.perf_counter() - t0
    tp = int((matched >= 0).sum())
    row: dict[str, Any] = {"n_exemplars": len(ex_ids), "n_to_find": len(target_ids), "n_predicted": len(matched), "n_matched": tp,
           "precision@0.5": None if not len(matched) else tp / len(matched), "recall@0.5": tp / len(target_ids)}
    pred = np.asarray(found.masks[keep].any(axis=0)) if keep.any() else np.zeros(sample.target.shape, dtype=bool)
    keeper.add(row["recall@0.5"], lambda: make_example(
        sample, sample.stem, row["recall@0.5"],
        f"{sample.stem}: {tp}/{len(target_ids)} found, {len(matched)} returned", sample.instances > 0, pred,
        whole=True))
    found_objects = np.zeros(len(target_ids), dtype=bool)
    found_objects[matched[matched >= 0]] = True
    return row, dt, found_objects
