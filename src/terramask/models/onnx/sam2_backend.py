"""SAM 2 / 2.1 from an ONNX export (:mod:`terramask.models.onnx.export`), run by
onnxruntime: :class:`OnnxSam2Backend`, the same contract as
:class:`terramask.models.sam2.backend.Sam2Backend`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import Embedding, FeatureGrid, as_rgb8, check_pixel_prompts, grid_feature_map
from terramask.models.onnx.backend import OnnxSamBackend


class OnnxSam2Backend(OnnxSamBackend):
    """SAM 2 / 2.1 from an ONNX export, run by onnxruntime; same contract as
    :class:`terramask.models.sam2.backend.Sam2Backend`.

    The image goes through the official ``SAM2Transforms`` (torchvision resize to
    ``S x S``), so this backend needs torch like every SAM 2 path; the encoder and decoder
    run in ONNX Runtime. Single-mask requests apply SAM 2's stability fallback (the best
    multimask output when the single-mask output is unstable) on the decoder's outputs.
    ``max_hole_area`` / ``max_sprinkle_area`` enable SAM 2's mask clean-up (CPU).
    """

    max_hole_area: float = 0.0
    max_sprinkle_area: float = 0.0
    decode_chunk: int = 16  # one-graph decoder: prompts per run in decode_points

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.meta.get("family") != "sam2":
            raise ModelError(f"{self.directory} holds a {self.meta.get('family')} export, not SAM 2")
        transforms = require("sam2.utils.transforms", "sam2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self._transforms = transforms.SAM2Transforms(resolution=self.img_size, mask_threshold=self.mask_threshold)

    def model_input(self, rgb8: np.ndarray) -> np.ndarray:
        """The encoder input ``(1, 3, S, S)`` float32: the official ``SAM2Transforms``."""
        torch = require("torch", "sam2")
        with torch.inference_mode():
            x = self._transforms(rgb8)[None].numpy()
        return np.ascontiguousarray(x, dtype=np.float32)

    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Encode an image: ``features`` as :class:`Sam2Backend` (``image_embed`` and two
        ``high_res_feats``), ``input_size`` ``(S, S)``."""
        rgb = as_rgb8(image)
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise InputError(f"cannot encode an empty image of shape {rgb.shape}")
        embed, h0, h1 = self._encoder.run(None, {"image": self.model_input(rgb)})
        extras: dict[str, Any] = {"runtime": self.runtime, "config": self.meta.get("config")}
        if self.quantized:
            extras["note"] = "int8-quantised encoder: results differ from the float model"
        if isinstance(image, GeoImage):
            extras["transform"] = image.transform
            extras["crs"] = image.crs
        return Embedding(
            model=self.name,
            features={"image_embed": embed, "high_res_feats": [h0, h1]},
            image_size=(int(rgb.shape[0]), int(rgb.shape[1])),
            input_size=(self.img_size, self.img_size),
            extras=extras,
        )

    def _features(self, embedding: Embedding):
        if not isinstance(embedding, Embedding):
            raise InputError(f"expected an Embedding from set_image, got {type(embedding).__name__}")
        feats = embedding.features
        ok = (
            embedding.model == self.name
            and isinstance(feats, dict)
            and feats.get("image_embed") is not None
            and tuple(np.shape(feats["image_embed"])) == (1, 256, self.grid, self.grid)
            and len(feats.get("high_res_feats", ())) == 2
        )
        if not ok:
            raise InputError(f"embedding was computed by model {embedding.model!r}; model {self.name!r} needs its own set_image")
        f = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        return f(feats["image_embed"]), f(feats["high_res_feats"][0]), f(feats["high_res_feats"][1])

    def _to_model_frame(self, xy: np.ndarray, embedding: Embedding) -> np.ndarray:
        rows, cols = embedding.image_size
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] / np.float32(cols)
        out[..., 1] = out[..., 1] / np.float32(rows)
        return out * np.float32(self.img_size)

    def _run_decoder(self, feats, coords, labels, mask):
        embed, h0, h1 = feats
        low = self.low_res
        mask_input = np.zeros((1, 1, low, low), np.float32) if mask is None else np.ascontiguousarray(mask, np.float32)
        return self._decoder.run(
            None,
            {
                "image_embed": embed,
                "high_res_0": h0,
                "high_res_1": h1,
                "point_coords": np.ascontiguousarray(coords, np.float32),
                "point_labels": np.ascontiguousarray(labels, np.float32),
                "mask_input": mask_input,
                "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
            },
        )

    def _single(self, logits: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM 2's single-mask output with its stability fallback, per prompt."""
        if not self.meta.get("dynamic_multimask_via_stability"):
            return logits[:, 0], iou[:, 0]
        delta, thresh = float(self.meta["stability_delta"]), float(self.meta["stability_thresh"])
        single = logits[:, 0].reshape(len(logits), -1)
        area_i = (single > delta).sum(axis=1).astype(np.float32)
        area_u = (single > -delta).sum(axis=1).astype(np.float32)
        stability = np.where(area_u > 0, area_i / np.maximum(area_u, 1), 1.0)
        best = np.argmax(iou[:, 1:], axis=1) + 1
        pick = np.where(stability >= thresh, 0, best)
        rows = np.arange(len(logits))
        return logits[rows, pick], iou[rows, pick]

    def _clean(self, low_res: np.ndarray) -> np.ndarray:
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            from terramask.models.sam2.cleanup import fill_holes_and_sprinkles

            return fill_holes_and_sprinkles(low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        return low_res

    def feature_map(self, embedding: Embedding) -> FeatureGrid:
        """The lowest-resolution image embedding over the image, as :meth:`Sam2Backend.feature_map`."""
        return grid_feature_map(self._features(embedding)[0], embedding.image_size, embedding.input_size, self.img_size,
                                self.low_res)

    def upscale_logits(self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """As :meth:`Sam2Backend.upscale_logits` (clean-up if enabled, one bilinear resize)."""
        arr = self._clean(np.asarray(low_res, dtype=np.float32)) if np.ndim(low_res) == 3 else low_res
        return super().upscale_logits(embedding, arr, window)

    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet:
        """Same contract as :meth:`terramask.models.sam2.backend.Sam2Backend.predict`."""
        low = self.low_res
        check_pixel_prompts(prompts, "SAM 2", low)
        feats = self._features(embedding)
        several = len(prompts.boxes) > 1
        n = max(1, len(prompts.boxes))
        parts_c, parts_l = [], []
        if len(prompts.boxes):  # boxes as corner points 2/3, before any clicks (upstream)
            parts_c.append(self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), embedding))
            parts_l.append(np.tile(np.array([[2.0, 3.0]], np.float32), (n, 1)))
        if len(prompts.points):
            parts_c.append(np.repeat(self._to_model_frame(prompts.points, embedding)[None], n, axis=0))
            parts_l.append(np.repeat(prompts.labels.astype(np.float32)[None], n, axis=0))
        if parts_c:  # SAM 2's image predictor always appends a padding point to prompts
            parts_c.append(np.zeros((n, 1, 2), np.float32))
            parts_l.append(-np.ones((n, 1), np.float32))
            coords, labels = np.concatenate(parts_c, axis=1), np.concatenate(parts_l, axis=1)
        else:
            coords, labels = np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32)
        mask = None if prompts.mask_logits is None else prompts.mask_logits[None]
        logits, iou = self._run_decoder(feats, coords, labels, mask)
        if multimask and not several:
            low_res, scores = logits[0, 1:], iou[0, 1:]
            order = np.argsort(-scores, kind="stable")
            low_res, scores = low_res[order], scores[order]
        else:
            low_res, scores = self._single(logits, iou)
        low_res = np.ascontiguousarray(low_res, np.float32)
        masks = self.upscale_logits(embedding, low_res) > self.mask_threshold
        return MaskSet(
            masks,
            scores.astype(np.float32),
            extras={"low_res_logits": np.clip(low_res, -32.0, 32.0)},
            transform=embedding.extras.get("transform"),
            crs=embedding.extras.get("crs"),
        )
