"""The weight-free ``classic`` backend: GrabCut / random walker for prompts, superpixels
with region merging for automatic segmentation.

It implements the :class:`~terramask.models.base.Backend` protocol and the
:class:`~terramask.models.base.Generator` capability, so every command works offline and
users have the baseline SAM is compared with. No weights, no torch.

- ``set_image`` computes the per-image features (Lab, colour gradient, valid mask): the
  classic "embedding", reused by every prompt. ``image_size == input_size`` = the image
  shape (no resize).
- ``predict`` segments prompts in the image pixel frame (see
  :mod:`terramask.models.classic.prompted` for the ROI, seeding and candidates, and
  :mod:`terramask.models.classic.guess` for how corrective clicks act and the scores).
  It returns up to 3 candidates (``multimask=True``, sorted by score) or the best one,
  with ``low_res_logits (K, 256, 256)`` float32 in SAM's low-res layout (longest image
  side -> 256, padded bottom/right; positive inside the mask, signed distance based) to
  pass back as ``Prompts.mask_logits``. Several boxes give one mask per box, in box order.
- ``generate`` segments the whole image (see :mod:`terramask.models.classic.auto`).
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from typing import Any

import numpy as np

from terramask.core.errors import InputError, ModelError, PromptError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Embedding, as_rgb8
from terramask.models.classic.auto import AutoParams
from terramask.models.classic.auto import generate as _generate
from terramask.models.classic.features import (
    LOW_RES,
    ClassicFeatures,
    compute_features,
    low_res_logits_to_image,
    mask_to_low_res_logits,
)
from terramask.models.classic.prompted import METHODS, PromptedConfig, Query, segment

log = logging.getLogger(__name__)

__all__ = ["ClassicBackend", "METHODS"]


class ClassicBackend:
    """Weight-free backend.

    ``method``: ``"grabcut"`` (OpenCV, colour models + graph cut) or ``"random_walker"``
    (scikit-image). ``config`` tunes the prompted engine (:class:`PromptedConfig`), or give
    its fields as keyword arguments (``ClassicBackend(work_side=320)``). ``seed`` seeds
    OpenCV's random generator before every query (GrabCut initialises its colour models
    from it), so a query gives the same masks whatever ran before it in the process.
    """

    #: Threshold of ``low_res_logits`` (and of :meth:`upscale_logits`) that gives masks.
    mask_threshold: float = 0.0

    def __init__(
        self,
        method: str = "grabcut",
        name: str = "classic",
        config: PromptedConfig | None = None,
        seed: int = 0,
        **config_fields: Any,
    ) -> None:
        if method not in METHODS:
            raise InputError(f"unknown classic method {method!r}; use one of {', '.join(METHODS)}")
        known = {f.name for f in fields(PromptedConfig)}
        unknown = sorted(set(config_fields) - known)
        if unknown:
            raise InputError(f"unknown classic option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.method = method
        self.name = name
        self.seed = int(seed)
        self.config = replace(config or PromptedConfig(), **config_fields)

    def __repr__(self) -> str:
        return f"ClassicBackend(method={self.method!r}, name={self.name!r})"

    # -- embedding ---------------------------------------------------------------
    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Per-image features of a GeoImage (its bands/stretch, nodata kept as invalid) or
        an ``(H, W, 3)`` / ``(H, W)`` uint8 array."""
        rgb = as_rgb8(image)
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise InputError(f"cannot segment an empty image ({w}x{h} pixels)")
        extras: dict[str, Any] = {}
        valid = None
        if isinstance(image, GeoImage):
            valid = image.valid_mask
            extras = {"transform": image.transform, "crs": image.crs, "source": image.source}
        feat = compute_features(rgb, valid)
        return Embedding(model=self.name, features=feat, image_size=(h, w), input_size=(h, w), extras=extras)

    def _features(self, embedding: Embedding) -> ClassicFeatures:
        if not isinstance(embedding.features, ClassicFeatures):
            raise ModelError(
                f"embedding of model {embedding.model!r} cannot be used by the classic backend; "
                "call set_image of this backend"
            )
        return embedding.features

    # -- prompted segmentation ----------------------------------------------------
    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet:
        """Masks for ``prompts`` (image pixel frame) on the image grid.

        Returns a :class:`MaskSet` with ``masks (K, H, W)``, ``scores`` (heuristic
        confidence in [0, 1], see :class:`~terramask.models.classic.guess.Scorer`),
        ``boxes`` xyxy, ``low_res_logits (K, 256, 256)`` float32 and ``kind (K,)`` str
        (``main`` = the method's result, ``guess`` = the region-merging guess it started
        from, ``tight`` / ``loose`` = smaller / larger variants). One query (points and/or
        one box and/or a prior mask): up to 3 distinct candidates sorted by score when
        ``multimask``, else the best. Several boxes: one mask (the best) per box, in box
        order. Point ``(x, y)`` means the pixel at column ``round(x)``, row ``round(y)``. Raises :class:`PromptError` for empty prompts, prompts in another frame,
        points outside the image or on nodata, boxes outside the image, text prompts, or
        no object information at all (only background points).
        """
        feat = self._features(embedding)
        h, w = feat.shape
        if prompts.frame != "scene":
            raise PromptError(
                f"the classic backend takes prompts in image pixels (frame 'scene'), got frame {prompts.frame!r}"
            )
        if prompts.text:
            raise PromptError("the classic backend does not understand text prompts; give points or boxes")
        if prompts.is_empty:
            raise PromptError("no prompt given: give at least one object point, a box or a prior mask")
        pts, labels = prompts.points, prompts.labels
        for (x, y), lab in zip(pts, labels, strict=True):
            if not (0 <= x <= w and 0 <= y <= h):
                raise PromptError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image")
            xi, yi = min(int(x), w - 1), min(int(y), h - 1)
            if lab == 1 and not feat.valid[yi, xi]:
                raise PromptError(f"object point ({x:g}, {y:g}) lies on nodata")
        boxes = []
        for box in prompts.boxes:
            clipped = np.array([max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)], dtype=np.float64)
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                raise PromptError(f"box {box.tolist()} lies outside the {w}x{h} image")
            boxes.append(clipped)
        prior = None
        if prompts.mask_logits is not None:
            prior = low_res_logits_to_image(prompts.mask_logits[0], (h, w)) > self.mask_threshold
        pos = pts[labels == 1]
        if not len(pos) and not boxes and (prior is None or not prior.any()):
            raise PromptError(
                "the classic backend needs object information: an object point (label 1), a box or a non-empty prior mask"
            )
        queries = [Query(pts, labels, box, prior) for box in boxes] if boxes else [Query(pts, labels, None, prior)]
        masks, scores, kinds = [], [], []
        for q in queries:
            self._reseed()
            cands = segment(feat, q, self.method, self.config)
            if not (multimask and len(queries) == 1):
                cands = cands[:1]
            masks += [c.mask for c in cands]
            scores += [c.score for c in cands]
            kinds += [c.kind for c in cands]
        stack = np.stack(masks)
        logits = np.stack([mask_to_low_res_logits(m, LOW_RES) for m in stack])
        return MaskSet(
            stack,
            np.asarray(scores, dtype=np.float32),
            extras={"low_res_logits": logits, "kind": np.asarray(kinds, dtype="<U5")},
            transform=embedding.extras.get("transform"),
            crs=embedding.extras.get("crs"),
        )

    def _reseed(self) -> None:
        """Seed OpenCV's global generator (GrabCut's k-means draws from it). The classic
        engine draws from no other generator (numpy's global one is not used)."""
        require("cv2", "classic", "opencv-python-headless").setRNGSeed(self.seed)

    def upscale_logits(
        self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """``(N, 256, 256)`` low-res logits -> ``(N, H, W)`` float32 on the image grid (or
        only ``window = (x0, y0, x1, y1)``); threshold at :attr:`mask_threshold`."""
        return low_res_logits_to_image(np.asarray(low_res, dtype=np.float32), embedding.image_size, window)

    # -- automatic segmentation -----------------------------------------------------
    def generate(self, image: GeoImage | np.ndarray | Embedding, min_area: int | None = None, **params: Any) -> MaskSet:
        """Regions of the whole image (superpixels + region merging), largest first.

        ``image``: a GeoImage, an RGB uint8 array, or an :class:`Embedding` of this backend
        (its features are reused). ``min_area`` in pixels (default ``max(32, H*W/10000)``);
        other ``params`` are the fields of :class:`~terramask.models.classic.auto.AutoParams`
        (``superpixels``, ``merge_thresh``, ``max_regions`` …). Returns masks, ``scores``
        (homogeneity), ``stability_score``, ``point_coords (N, 2)``, ``crop_box (N, 4)``;
        at most ``max_regions`` (default 256) masks.
        """
        known = {f.name for f in fields(AutoParams)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"unknown generate parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        emb = image if isinstance(image, Embedding) else self.set_image(image)
        feat = self._features(emb)
        self._reseed()
        result = _generate(feat, AutoParams(min_area=min_area, **params))
        return MaskSet(
            result.masks,
            result.scores,
            result.boxes,
            result.extras,
            transform=emb.extras.get("transform"),
            crs=emb.extras.get("crs"),
        )
