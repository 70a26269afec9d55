"""Training data of a fine-tuning run: images split into train/val, embeddings computed
once (through the embedding cache), and the objects of every training image with their
low-res targets.

One :class:`TrainImage` per training image keeps the embedding (``(1, 256, 64, 64)``
float32 for SAM: 4 MB), the object map and ignore mask on the image grid (to sample
prompts) and one ``(low, low)`` int8 target per object; the RGB image only when the
encoder trains.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np

from terramask.core.errors import DatasetError, InputError
from terramask.eval.datasets import SegmentationDataset
from terramask.models.base import Backend, Embedding
from terramask.models.finetune.trainable import PromptSample, Trainer
from terramask.pipelines.finetune.prompts import BAND_PX, sample_prompt

log = logging.getLogger(__name__)


@dataclass
class TrainImage:
    """``instances (H, W)`` int32 object map (0 none, ``i + 1`` object ``i``), ``ignore
    (H, W)`` bool, ``targets[i]`` the trainer's ``(low, low)`` int8 target of object ``i``."""

    stem: str
    embedding: Embedding
    instances: np.ndarray
    ignore: np.ndarray
    targets: list[np.ndarray]
    image: np.ndarray | None = None

    def prompt(self, i: int, kind: str, rng: np.random.Generator) -> PromptSample:
        """A prompt on object ``i`` in image pixels, sampled in a crop around the object
        (same result as on the whole image: the crop keeps a margin of background)."""
        ys, xs = np.nonzero(self.instances == i + 1)
        rows, cols = self.instances.shape
        m = BAND_PX + 2
        y0, y1 = max(0, int(ys.min()) - m), min(rows, int(ys.max()) + m + 1)
        x0, x1 = max(0, int(xs.min()) - m), min(cols, int(xs.max()) + m + 1)
        mask = self.instances[y0:y1, x0:x1] == i + 1
        ignore = self.ignore[y0:y1, x0:x1]
        p = sample_prompt(mask, ignore if ignore.any() else None, kind, rng)
        offset = np.array([x0, y0], dtype=np.float64)
        box = None if p.box is None else p.box + np.tile(offset, 2)
        return PromptSample(p.points + offset, p.labels, box, refine=p.refine)


def split_images(n: int, val: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, val)`` image indices: a seeded permutation, ``round(val * n)`` (at least
    one when ``val > 0``) held back. Raises :class:`InputError` when nothing is left to train on."""
    if n < 1:
        raise DatasetError("the dataset has no image")
    n_val = 0 if val <= 0 else max(1, int(round(val * n)))
    if n_val >= n:
        raise InputError(f"--val {val} holds back all {n} image(s); give more images or --val 0 (no validation split)")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def subset(dataset: SegmentationDataset, indices: list[int]) -> SegmentationDataset:
    """The same dataset restricted to ``indices`` of its pairs."""
    out = copy.copy(dataset)
    out.pairs = [dataset.pairs[i] for i in indices]
    return out


def load_train_images(dataset: SegmentationDataset, backend: Backend, trainer: Trainer, keep_images: bool) -> list[TrainImage]:
    """Embed every image of ``dataset`` once (``backend``: the cached one) and prepare
    its objects' targets; images without an object are skipped. Raises
    :class:`DatasetError` when no training object remains."""
    out: list[TrainImage] = []
    for sample in dataset:
        if sample.n_instances == 0:
            continue
        embedding = backend.set_image(sample.image)
        ignore = sample.ignore
        targets = [trainer.prepare_target(embedding, sample.instance_mask(i), ignore if ignore.any() else None)
                   for i in range(sample.n_instances)]
        out.append(TrainImage(sample.stem, embedding, sample.instances, ignore, targets,
                              sample.image if keep_images else None))
        log.debug("training image %s: %d object(s)", sample.stem, sample.n_instances)
    if not out:
        raise DatasetError(
            f"no usable object of class {dataset.target_class} in the {len(dataset)} training image(s) of {dataset.root} "
            f"(at least {dataset.min_area} px each)"
        )
    return out
