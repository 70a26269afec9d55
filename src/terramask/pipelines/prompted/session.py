"""Prompted segmentation: one image, one embedding, any number of prompts.

The reference notebook's interactive loop (``set_image`` once, ``predict`` per click,
refine with extra background points and the best previous logits) as an object:

>>> session = PromptSession(backend, image)
>>> first = session.predict(Prompts(points=[[120, 80]], labels=[1]))
>>> better = session.refine(first, points=[[140, 90]], labels=[0])

Prompts given to a session are in the pixel frame of its image (``frame="scene"``);
conversion from map or lon/lat coordinates happens before, in
:mod:`terramask.io.prompt_frames`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from terramask.core.errors import PromptError
from terramask.core.frames import window_transform
from terramask.core.geometry import Window
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Backend, Embedding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Candidate masks for one prompt set.

    ``candidates`` is sorted by score (best first) on the session image's grid, with its
    transform/CRS and a ``low_res_logits`` column; ``prompts`` are in that grid's pixels;
    ``window`` is where the grid sits in the scene (``None`` = whole scene).
    """

    candidates: MaskSet
    prompts: Prompts
    model: str
    window: Window | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> MaskSet:
        """The highest-scoring candidate as a one-mask set."""
        return self.candidates[0]

    @property
    def best_logits(self) -> np.ndarray:
        """``(1, h, w)`` float32 low-res logits of the best candidate (a prior mask)."""
        return np.asarray(self.candidates["low_res_logits"][0:1], dtype=np.float32)


class PromptSession:
    """Holds one image embedding and answers prompts from it.

    ``image`` is the GeoImage handed to the backend (a whole scene or a window of it;
    ``window`` says which). The encoder runs once, in the constructor.
    """

    def __init__(self, backend: Backend, image: GeoImage, window: Window | None = None) -> None:
        self.backend = backend
        self.image = image
        self.window = window
        self.valid_mask = image.valid_mask
        started = time.perf_counter()
        self.rgb8 = image.to_rgb8()
        self.embedding: Embedding = backend.set_image(self.rgb8)
        self.encoder_seconds = time.perf_counter() - started
        log.info("embedding for %s computed in %.2f s", image.source, self.encoder_seconds)

    @property
    def model(self) -> str:
        return getattr(self.backend, "name", type(self.backend).__name__)

    def predict(self, prompts: Prompts, multimask: bool = True) -> Prediction:
        """Candidate masks for ``prompts`` (image pixel frame), best first."""
        self._check_prompts(prompts)
        started = time.perf_counter()
        masks = self.backend.predict(self.embedding, prompts, multimask=multimask)
        decode_seconds = time.perf_counter() - started
        masks = MaskSet(
            masks.masks,
            masks.scores,
            masks.boxes,
            masks.extras,
            transform=self.image.transform,
            crs=self.image.crs,
        )
        if len(prompts.boxes) <= 1:  # several boxes: one mask per box, in box order
            masks = masks.sorted_by_score()
        extras = getattr(self.embedding, "extras", {})
        timings = {
            "decoder_s": decode_seconds,
            "set_image_s": self.encoder_seconds,  # encoder or cache read, plus stretch
            "encoder_s": float(extras.get("encoder_seconds", self.encoder_seconds)),
        }
        if "cache" in extras:
            timings["embedding_cache"] = extras["cache"]
        return Prediction(masks, prompts, self.model, self.window, timings)

    def refine(self, previous: Prediction, points, labels, multimask: bool = True) -> Prediction:
        """Add points to ``previous``'s prompts and pass its best logits as prior mask.

        Earlier points are kept, so the common notebook mistake of predicting from the
        new background points alone cannot happen.
        """
        prompts = previous.prompts.refine(points, labels, mask_logits=previous.best_logits)
        return self.predict(prompts, multimask=multimask)

    def _check_prompts(self, prompts: Prompts) -> None:
        if prompts.frame != "scene":
            raise PromptError(f"prompts must be in image pixels here, got frame {prompts.frame!r}")
        if len(prompts.points) == 0 and len(prompts.boxes) == 0:
            raise PromptError("give at least one point or box")
        rows, cols = self.image.shape
        for x, y in prompts.points:
            if not (0 <= x < cols and 0 <= y < rows):
                raise PromptError(f"point ({x:g}, {y:g}) is outside the image ({cols} x {rows} px)")
            if not self.valid_mask[int(y), int(x)]:
                raise PromptError(f"point ({x:g}, {y:g}) lies on nodata")


def window_image(image: GeoImage, window: Window) -> GeoImage:
    """The part of an in-memory ``image`` inside ``window`` (image pixel frame)."""
    rows, cols = window.slices()
    return replace(
        image,
        pixels=image.pixels[:, rows, cols],
        transform=window_transform(image.transform, window.col_off, window.row_off),
        window=window,
    )


def prompt_window(prompts: Prompts, width: int, height: int, size: int = 1024, margin: int = 64) -> Window:
    """A window around all prompts (scene pixels) for encoding only what is needed.

    The window is at least ``size`` x ``size`` (or the scene, if smaller), centred on the
    prompts' extent plus ``margin``, and shifted inside the scene.
    """
    xs = np.concatenate([prompts.points[:, 0], prompts.boxes[:, 0], prompts.boxes[:, 2]])
    ys = np.concatenate([prompts.points[:, 1], prompts.boxes[:, 1], prompts.boxes[:, 3]])
    if xs.size == 0:
        raise PromptError("give at least one point or box")
    x0, x1 = float(xs.min()) - margin, float(xs.max()) + margin
    y0, y1 = float(ys.min()) - margin, float(ys.max()) + margin
    w = int(min(width, max(size, np.ceil(x1 - x0))))
    h = int(min(height, max(size, np.ceil(y1 - y0))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    col = int(np.clip(round(cx - w / 2), 0, width - w))
    row = int(np.clip(round(cy - h / 2), 0, height - h))
    return Window(col, row, w, h)
