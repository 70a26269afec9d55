"""Tiny deterministic backends on the Backend protocol, for evaluation tests only.

- :class:`DiscBackend`: an "interactive" model whose answer is the prior mask (when
  given) plus a disc of radius ``r`` around the newest click if it is an object click, or
  minus that disc for a background click (without a prior: all clicks in order); the disc
  is limited to pixels of the clicked pixel's colour, so on a two-colour image it never
  spills over the object's edge. Corrective clicks therefore improve it step by step, and it only
  remembers earlier results through the prior, like SAM.
- :class:`BoxFillBackend`: a box prompt gives the filled box.
- :class:`FixedGenerator`: automatic generation returns fixed masks.
Every call is recorded in ``calls`` so tests can check what the simulator sent.
"""

from __future__ import annotations

import numpy as np

from terramask.core.maskset import MaskSet
from terramask.models.base import Embedding


class _Base:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.images = 0

    def set_image(self, image):
        image = np.asarray(image)
        self.images += 1
        return Embedding(model=self.name, features=image, image_size=image.shape[:2], input_size=image.shape[:2])


def _disc(shape, x, y, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


class DiscBackend(_Base):
    name = "disc"

    def __init__(self, radius: float = 6.0, use_prior: bool = True, colour_tol: int = 30) -> None:
        super().__init__()
        self.radius = radius
        self.colour_tol = colour_tol
        self.use_prior = use_prior

    def _mask(self, image, prompts, r) -> np.ndarray:
        shape = image.shape[:2]
        points, labels = prompts.points, prompts.labels
        if self.use_prior and prompts.mask_logits is not None:
            # the prior already holds the effect of the earlier clicks: add the last one
            mask = prompts.mask_logits[0] > 0
            points, labels = points[-1:], labels[-1:]
        else:
            mask = np.zeros(shape, dtype=bool)
        for (x, y), lab in zip(points, labels):
            # the disc, limited to pixels of the clicked pixel's colour
            colour = image[int(y), int(x)].astype(int)
            d = _disc(shape, x, y, r) & (np.abs(image.astype(int) - colour).sum(axis=2) <= self.colour_tol)
            mask = mask | d if lab == 1 else mask & ~d
        return mask

    def predict(self, embedding, prompts, multimask=True):
        self.calls.append(
            {
                "points": prompts.points.copy(),
                "labels": prompts.labels.copy(),
                "prior": None if prompts.mask_logits is None else prompts.mask_logits.copy(),
                "multimask": multimask,
            }
        )
        radii = [self.radius * 0.5, self.radius, self.radius * 2] if multimask else [self.radius]
        scores = [0.5, 0.9, 0.7] if multimask else [0.9]
        masks = np.stack([self._mask(embedding.features, prompts, r) for r in radii])
        logits = np.where(masks, 10.0, -10.0).astype(np.float32)
        return MaskSet(masks, np.asarray(scores, dtype=np.float32), extras={"low_res_logits": logits})


class BoxFillBackend(_Base):
    name = "boxfill"

    def predict(self, embedding, prompts, multimask=True):
        shape = embedding.image_size
        self.calls.append({"boxes": prompts.boxes.copy(), "multimask": multimask})
        mask = np.zeros(shape, dtype=bool)
        x0, y0, x1, y1 = prompts.boxes[0]
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        return MaskSet(mask[None], np.ones(1, dtype=np.float32))


class FixedGenerator(_Base):
    name = "fixed"

    def __init__(self, masks: np.ndarray) -> None:
        super().__init__()
        self.masks = np.asarray(masks, dtype=bool)

    def generate(self, image, **params):
        self.calls.append({"params": params})
        return MaskSet(self.masks, np.ones(len(self.masks), dtype=np.float32))

    def predict(self, embedding, prompts, multimask=True):  # pragma: no cover - not used
        raise NotImplementedError
