"""Find-similar's prototypes (:mod:`terramask.models.concept.similar`, step 1): example
objects -> unit feature vectors of their class, once per scene.

Each exemplar's mask (a polygon rasterised by the caller, or the model's best mask for a
point) is laid over the encoder's feature map
(:class:`~terramask.models.base.FeatureGrid`); the cells' unit feature vectors, minus
the mean of the exemplar images (the part every cell shares) and scaled to unit length
again, are averaged, weighted by the share of each cell the mask covers
(:mod:`terramask.models.concept.feature_pooling`), into one unit vector per exemplar.
Examples (label 1) are positive prototypes of their class; counter-examples (label 0)
negative ones; the rest of the exemplar images (pixels outside every exemplar) gives one
more negative, the *background* prototype (:data:`BACKGROUND`).

Frames: masks and points are pixels of the exemplar's image (``tile`` frame,
``x=col, y=row``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.prompts import Prompts
from terramask.models.base import Backend, Embedding, FeatureMap, PointBatchDecoder
from terramask.models.concept.feature_pooling import cell_coverage, centre, pool, unit_features

BACKGROUND = "background"


@dataclass(frozen=True)
class Exemplar:
    """One example (``label`` 1) or counter-example (``label`` 0) in one image.

    ``mask``: ``(H, W)`` bool on the image grid (a rasterised polygon), or ``point``
    ``(x, y)`` image pixels (the model's best mask for it is used); ``cls``: the class of
    the objects it stands for; ``where``: how messages name it (``"exemplar 3 of ex.gpkg"``).
    """

    label: int = 1
    cls: str = "object"
    mask: np.ndarray | None = None
    point: tuple[float, float] | None = None
    where: str = "exemplar"

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise PromptError(f"{self.where}: label must be 1 (example) or 0 (counter-example), got {self.label!r}")
        if (self.mask is None) == (self.point is None):
            raise PromptError(f"{self.where}: give a mask or a point, not {'both' if self.mask is not None else 'neither'}")


@dataclass(frozen=True)
class ExemplarImage:
    """Exemplars lying in one image (a tile of the scene) and the image itself.
    ``valid``: ``(H, W)`` bool pixels holding data (None: all); the background prototype
    only uses valid pixels."""

    image: GeoImage | np.ndarray
    exemplars: Sequence[Exemplar]
    valid: np.ndarray | None = None


@dataclass(frozen=True)
class Prototypes:
    """Unit feature vectors of the exemplars of one model.

    ``vectors (P, C)`` float32 unit rows; ``labels (P,)`` int64 (1 positive, 0 negative);
    ``classes``: the class of each vector (``"background"`` for the background
    prototype); ``names``: the positive classes in first-seen order (class index ``k`` of
    :meth:`SimilarFinder.find` is ``names[k]``); ``center`` ``(C,)``: the mean unit feature
    of the exemplar images, subtracted from every cell before comparing (:func:`centre`).
    """

    model: str
    vectors: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: tuple[str, ...] = field(default=())
    center: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.names:
            seen = dict.fromkeys(c for c, lab in zip(self.classes, self.labels.tolist(), strict=True) if lab == 1)
            object.__setattr__(self, "names", tuple(seen))
        if not self.names:
            raise PromptError("no usable example: give at least one exemplar with label 1")

    @property
    def positive(self) -> np.ndarray:
        return self.vectors[self.labels == 1]

    @property
    def negative(self) -> np.ndarray:
        return self.vectors[self.labels == 0]

    def class_index(self) -> np.ndarray:
        """``(n_positive,)`` int64: the index in ``names`` of each positive vector."""
        pos = [c for c, lab in zip(self.classes, self.labels.tolist(), strict=True) if lab == 1]
        return np.array([self.names.index(c) for c in pos], dtype=np.int64)

    def describe(self) -> dict:
        return {"model": self.model, "classes": list(self.names), "positive": int((self.labels == 1).sum()),
                "negative": int((self.labels == 0).sum()) - self.classes.count(BACKGROUND),
                "background": BACKGROUND in self.classes}


def check_backend(backend: Any) -> None:
    """Raise :class:`ModelError` unless ``backend`` has a feature map and point decoding."""
    if not isinstance(backend, FeatureMap) or not isinstance(backend, PointBatchDecoder):
        name = getattr(backend, "name", type(backend).__name__)
        raise ModelError(f"model {name!r} has no image embedding to compare objects with; find-similar needs a "
                         "SAM-family model (e.g. --model sam-vit-b, mobilesam, sam2.1-hiera-tiny)")


def exemplar_mask(backend: Backend, embedding: Embedding, exemplar: Exemplar) -> np.ndarray:
    """The exemplar's ``(H, W)`` bool mask: its own, or the model's best for its point."""
    if exemplar.mask is not None:
        mask = np.asarray(exemplar.mask, dtype=bool)
        if mask.shape != tuple(embedding.image_size):
            raise InputError(f"{exemplar.where}: mask of shape {mask.shape} on a {embedding.image_size} image")
        return mask
    x, y = exemplar.point  # type: ignore[misc]
    result = backend.predict(embedding, Prompts(points=np.array([[x, y]]), labels=np.array([1]), frame="tile"), multimask=True)
    return np.asarray(result.masks[int(np.argmax(result.scores))], dtype=bool)


def build_prototypes(backend: Backend, images: Iterable[ExemplarImage], *, background: bool = True) -> Prototypes:
    """Prototypes of every exemplar of ``images`` (see the module docstring).

    Raises :class:`PromptError` naming the exemplar when its mask covers no pixel, and
    when no exemplar is an example (label 1); :class:`ModelError` when the backend has no
    feature map.
    """
    check_backend(backend)
    seen = []  # (unit features, cell size, exemplar masks, valid pixels not in an exemplar)
    for item in images:
        embedding = backend.set_image(item.image)
        grid = backend.feature_map(embedding)  # type: ignore[attr-defined]
        masks = []
        for ex in item.exemplars:
            mask = exemplar_mask(backend, embedding, ex)
            if not mask.any():
                raise PromptError(f"{ex.where}: covers no pixel of the scene")
            masks.append((ex, mask))
        valid = np.ones(tuple(embedding.image_size), dtype=bool) if item.valid is None else np.asarray(item.valid, bool)
        rest = valid & ~np.any([m for _, m in masks], axis=0) if masks else valid
        seen.append((unit_features(grid), grid.cell, masks, valid, rest))
    center = _center([(unit, cell, valid) for unit, cell, _, valid, _ in seen])
    vectors: list[np.ndarray] = []
    labels: list[int] = []
    classes: list[str] = []
    bg_sum = np.zeros_like(center, dtype=np.float64)
    for unit, cell, masks, _, rest in seen:
        centred = centre(unit, center)
        for ex, mask in masks:
            vectors.append(pool(centred, cell_coverage(mask, centred.shape[1:], cell)[None])[0])
            labels.append(ex.label)
            classes.append(ex.cls)
        if background and rest.any():
            cover = cell_coverage(rest, centred.shape[1:], cell)
            bg_sum += cover.reshape(-1) @ centred.reshape(centred.shape[0], -1).T
    if background and np.linalg.norm(bg_sum) > 0:
        vectors.append((bg_sum / np.linalg.norm(bg_sum)).astype(np.float32))
        labels.append(0)
        classes.append(BACKGROUND)
    if 1 not in labels:
        raise PromptError("no usable example: every exemplar is a counter-example (label 0); give at least one with label 1")
    name = str(getattr(backend, "name", type(backend).__name__))
    return Prototypes(name, np.stack(vectors).astype(np.float32), np.array(labels, dtype=np.int64), tuple(classes),
                      center=center)


def _center(items: list[tuple[np.ndarray, tuple[float, float], np.ndarray]]) -> np.ndarray:
    """``(C,)`` float32 mean unit feature over the valid pixels of the exemplar images."""
    total, weight = None, 0.0
    for unit, cell, valid in items:
        cover = cell_coverage(valid, unit.shape[1:], cell).reshape(-1)
        part = cover @ unit.reshape(unit.shape[0], -1).T
        total = part if total is None else total + part
        weight += float(cover.sum())
    if total is None or weight <= 0:
        raise PromptError("no exemplar image holds valid pixels")
    return (total / weight).astype(np.float32)
