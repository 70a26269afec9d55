"""SAM 3 concept prompts: phrases and example boxes -> every instance, with presence scores.

Which implementation: ``transformers``' ``Sam3Model`` / ``Sam3Processor``, not Meta's
``sam3`` package. Both load the same official weights (``facebook/sam3``, gated under
the SAM License). ``transformers`` is released on PyPI on a steady cadence with CPU
wheels and tests on CPU, reads ``safetensors`` (no pickle), shares the loading path,
processor and post-processing conventions with the detectors this package already uses
(Grounding DINO, OWLv2), and exposes the pieces we need separately (vision features
computed once per image, reused for every phrase). The ``sam3`` package is a research
repository installed from git, built around CUDA (its defaults and extras assume a GPU),
loads a pickled ``.pt`` checkpoint and brings its own training/video stack; for "find
every instance in a CPU tile" it adds weight and no capability.

``find(image, query)``:

- each phrase is one concept prompt; exemplar boxes (label 1 example, 0
  counter-example) refine the phrase of their class (with one phrase and no per-box
  classes: that phrase); exemplars of a class no phrase names form their own concept
  (SAM 3's ``"visual"`` prompt), see :func:`concept_prompts`;
- the image is encoded once; each concept is decoded from the shared features;
- instances are SAM 3's queries whose score (query probability x presence
  probability, as ``post_process_instance_segmentation`` computes it) passes
  ``threshold``; masks are the library's, resized to the image and cut at
  ``mask_threshold``.

Result: :class:`MaskSet` on the image grid, ``scores`` = SAM 3's score, ``boxes`` = the
masks' boxes, columns ``class``, ``predicted_iou`` (= ``scores``: SAM 3 has no IoU head),
``presence_score`` (the concept's presence probability in this image).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from terramask.core.errors import InputError
from terramask.core.image import GeoImage
from terramask.core.maskset import MaskSet
from terramask.models.base import as_rgb8
from terramask.models.concept.base import CLASS_COLUMN, ConceptQuery
from terramask.models.concept.detectors import CONCEPT_EXTRA, load_pretrained, transformers_module

logger = logging.getLogger(__name__)

SAM3_THRESHOLD = 0.5
"""Instance score threshold: the official ``sam3`` predictor's ``confidence_threshold``
(``transformers``' ``post_process_instance_segmentation`` defaults to 0.3)."""
SAM3_MASK_THRESHOLD = 0.5
"""Mask probability threshold (both implementations' default)."""
PRESENCE_COLUMN = "presence_score"
VISUAL_PROMPT = "visual"


def concept_prompts(query: ConceptQuery) -> list[tuple[str | None, str, np.ndarray, np.ndarray]]:
    """The prompts SAM 3 runs for ``query``: ``(text or None, class, boxes (N, 4), labels (N,))``.

    - one phrase and no per-box classes: every exemplar box refines the phrase;
    - otherwise an exemplar box refines the phrase whose class (or text) is its class;
      counter-examples of the default class (``query.exemplar_class``, no class given)
      refine every phrase; the remaining boxes form one visual prompt per class
      (SAM 3's ``"visual"`` text), which needs an example (label 1): a class with only
      counter-examples here is left out, and a query with neither a phrase nor an
      example is an :class:`InputError`.
    """
    boxes, labels = query.exemplar_boxes, query.exemplar_labels
    if len(query.phrases) == 1 and not query.exemplar_classes:
        phrase = query.phrases[0]
        return [(phrase, query.class_of(phrase), boxes, labels)]
    if not query.phrases and len(boxes) and not np.any(labels == 1):
        raise InputError("exemplars without a phrase need at least one example (label 1), not only counter-examples")
    owners = query.box_classes()
    used = np.zeros(len(boxes), dtype=bool)
    shared = (owners == query.exemplar_class) & (labels == 0)
    prompts: list[tuple[str | None, str, np.ndarray, np.ndarray]] = []
    for phrase in query.phrases:
        cls = query.class_of(phrase)
        mine = np.array([o in (cls, phrase) for o in owners], dtype=bool).reshape(-1)
        used |= mine
        take = mine | shared
        prompts.append((phrase, cls, boxes[take], labels[take]))
    if query.phrases:
        used |= shared
    for cls in dict.fromkeys(owners[~used].tolist()):
        group = ~used & (owners == cls)
        if np.any(labels[group] == 1):
            prompts.append((None, str(cls), boxes[group], labels[group]))
    return prompts


class Sam3ConceptBackend:
    """SAM 3 through ``transformers`` (see the module docstring)."""

    #: SAM 3 reads example boxes itself (the scene pipeline hands each tile the boxes in it)
    takes_exemplar_boxes = True

    def __init__(
        self,
        model: Any,
        processor: Any,
        threshold: float = SAM3_THRESHOLD,
        mask_threshold: float = SAM3_MASK_THRESHOLD,
        name: str = "sam3",
        device: str = "cpu",
    ) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.threshold = float(threshold)
        self.mask_threshold = float(mask_threshold)
        self.name = name
        self.device = device

    @classmethod
    def from_pretrained(cls, directory: Path, device: str = "cpu", **kwargs: Any) -> Sam3ConceptBackend:
        tf = transformers_module()
        model = load_pretrained(tf.Sam3Model, directory, "SAM 3 model")
        processor = load_pretrained(tf.Sam3Processor, directory, "SAM 3 processor")
        return cls(model, processor, device=device, **kwargs)

    def find(self, image: GeoImage | np.ndarray, query: ConceptQuery) -> MaskSet:
        """Every instance of ``query`` in ``image`` (see the module docstring)."""
        from terramask.core.lazy import require

        torch = require("torch", CONCEPT_EXTRA)
        rgb = as_rgb8(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        pixels = self.processor(images=rgb, return_tensors="pt")
        with torch.inference_mode():
            vision = self.model.get_vision_features(pixel_values=pixels["pixel_values"].to(self.device))
            found = [self._decode(torch, vision, size, *prompt) for prompt in concept_prompts(query)]
        transform, crs = (image.transform, image.crs) if isinstance(image, GeoImage) else (None, None)
        masks = np.concatenate([f[0] for f in found])
        result = MaskSet(
            masks,
            np.concatenate([f[1] for f in found]),
            extras={
                CLASS_COLUMN: np.concatenate([f[2] for f in found]),
                "predicted_iou": np.concatenate([f[1] for f in found]),
                PRESENCE_COLUMN: np.concatenate([f[3] for f in found]),
            },
            transform=transform,
            crs=crs,
        )
        return result[result.areas > 0]

    def _decode(
        self, torch: Any, vision: Any, size: tuple[int, int], text: str | None, cls: str, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One concept: masks ``(K, H, W)`` bool, scores ``(K,)`` float32, classes ``(K,)``
        object, presence ``(K,)`` float32."""
        kwargs: dict[str, Any] = {"original_sizes": [list(size)], "return_tensors": "pt"}
        if len(boxes):
            kwargs["input_boxes"] = [boxes.tolist()]
            kwargs["input_boxes_labels"] = [labels.tolist()]
        inputs = self.processor(text=text if text is not None else VISUAL_PROMPT, **kwargs)
        inputs.pop("original_sizes", None)
        out = self.model(vision_embeds=vision, **{k: v.to(self.device) for k, v in inputs.items()})
        result = self.processor.post_process_instance_segmentation(
            out, threshold=self.threshold, mask_threshold=self.mask_threshold, target_sizes=[size]
        )[0]
        masks = result["masks"].bool().cpu().numpy().reshape(-1, *size)
        scores = result["scores"].float().cpu().numpy()
        presence = torch.sigmoid(out.presence_logits).float().cpu().numpy().reshape(-1)
        k = len(scores)
        return masks, scores, np.full(k, cls, dtype=object), np.full(k, float(presence[0]), dtype=np.float32)
