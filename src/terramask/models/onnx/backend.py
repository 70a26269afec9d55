"""ONNX Runtime backends for exports written by :mod:`terramask.models.onnx.export`:
:class:`OnnxSamBackend` (SAM, MobileSAM) and :class:`~terramask.models.onnx.sam2_backend.OnnxSam2Backend` (SAM 2 / 2.1);
:func:`open_onnx_backend` picks the right one for a directory.

:class:`OnnxSamBackend` implements :class:`~terramask.models.base.Backend` and
:class:`~terramask.models.base.PointBatchDecoder` with ``onnxruntime`` and numpy only
(no torch at run time). It reproduces :class:`terramask.models.sam.backend.SamBackend` step by
step: the same resize (PIL bilinear, longest side 1024, as ``ResizeLongestSide``), the
same normalisation and padding, the same coordinate transform, the same multimask
choice and SAM's ``postprocess_masks`` resize (:mod:`terramask.models.upscale`: PyTorch's
engine where torch is installed, else the numpy engine, one linear map per axis with
PyTorch's bilinear weights).

Parity with the PyTorch backend on the same weights (tested): embeddings within
``1e-4`` absolute, low-res logits within ``1e-3`` absolute + ``1e-3`` relative, masks
IoU >= 0.99 (in practice identical). The optional int8 encoder (``quantized=True``,
static, :mod:`terramask.models.onnx.quantize`) changes results and is labelled so in the
embedding's ``extras``.

Threads: ``threads`` (or ``TERRAMASK_ONNX_THREADS``), default all cores of the machine;
the intra-op pool does not spin between runs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from terramask.core.errors import InputError, ModelError
from terramask.core.image import GeoImage
from terramask.core.lazy import require
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.models.base import (
    Embedding,
    FeatureGrid,
    as_rgb8,
    check_pixel_prompts,
    grid_feature_map,
    upscale_arguments,
)
from terramask.models.onnx.export import DECODER, ENCODER, ENCODER_INT8, STAGED, read_metadata
from terramask.models.onnx.staged import StagedSamDecoder
from terramask.models.upscale import Upscaler

log = logging.getLogger(__name__)

ENV_THREADS = "TERRAMASK_ONNX_THREADS"


def preprocess_shape(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """``(rows, cols)`` after resizing the longest side to ``long_side`` (SAM's rounding)."""
    scale = long_side * 1.0 / max(rows, cols)
    return int(rows * scale + 0.5), int(cols * scale + 0.5)


def preprocess(rgb8: np.ndarray, size: int, mean, std) -> tuple[np.ndarray, tuple[int, int]]:
    """``(H, W, 3)`` uint8 -> ``(1, 3, size, size)`` float32 model input and the resized
    ``(rows, cols)``: PIL bilinear resize of the longest side (what SAM's
    ``ResizeLongestSide.apply_image`` does through torchvision), normalisation, zero
    padding at the bottom/right."""
    from PIL import Image

    rows, cols = preprocess_shape(rgb8.shape[0], rgb8.shape[1], size)
    resized = np.asarray(Image.fromarray(rgb8).resize((cols, rows), Image.Resampling.BILINEAR), dtype=np.float32)
    x = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    out = np.zeros((1, 3, size, size), dtype=np.float32)
    out[0, :, :rows, :cols] = np.moveaxis(x, 2, 0)
    return out, (rows, cols)


def upscale_engine() -> str:
    """The :class:`Upscaler` engine: PyTorch's where torch is installed (its bilinear kernel
    and sparse taps; the numpy engine's dense maps made a click 1.5-2x slower than the
    torch backend's), else numpy, so the ONNX backends still run without torch."""
    import importlib.util

    try:
        return "torch" if importlib.util.find_spec("torch") is not None else "numpy"
    except (ImportError, ValueError):  # blocked or broken install (sys.modules["torch"] = None)
        return "numpy"


def default_threads() -> int:
    """ONNX Runtime's intra-op threads: ``TERRAMASK_ONNX_THREADS``, else every core."""
    from terramask.models.machine import threads_from_env

    return threads_from_env(ENV_THREADS, os.cpu_count() or 1)


class OnnxSamBackend:
    """SAM / MobileSAM from an ONNX export, run by onnxruntime.

    Build with :meth:`from_directory`. ``name`` defaults to the exported model's name;
    ``weights_id`` (used by the embedding cache) names the source weights *and* the
    runtime, so ONNX embeddings never mix with PyTorch ones.
    """

    mask_threshold: float = 0.0
    #: prompts per staged decoder run in :meth:`decode_points` / :meth:`decode_selected`
    decode_chunk: int = 4

    def __init__(self, directory: str | os.PathLike[str], name: str | None = None, threads: int | None = None, quantized: bool = False, providers: list[str] | None = None) -> None:
        self.directory = Path(directory).expanduser()
        self.meta = read_metadata(self.directory)
        self.name = name or self.meta["model"]
        self.quantized = bool(quantized)
        enc_file = ENCODER_INT8 if quantized else ENCODER
        if quantized and not (self.meta.get("files") or {}).get("encoder_int8"):
            raise ModelError(f"{self.directory} has no int8 encoder; export with --quantize first")
        self.img_size = int(self.meta["input_size"])
        self.low_res = int(self.meta["low_res_size"])
        self.grid = int(self.meta["embedding_grid"])
        self._open_sessions(self.directory / enc_file, self.directory / DECODER, threads, providers)
        self._staged = self._open_staged()
        self._mean = self.meta.get("pixel_mean")
        self._std = self.meta.get("pixel_std")
        # the static int8 encoder replaced a dynamic one: its embeddings get their own cache key
        self.weights_id = f"{self.meta['source_sha256']}:{self.runtime}{'-static' if quantized else ''}"
        self.source = str(self.directory)
        self.device = "cpu"
        model_size = None if self.meta.get("family") == "sam2" else self.img_size
        self._upscaler = Upscaler(self.low_res, model_size, upscale_engine())

    @property
    def runtime(self) -> str:
        """The runtime's name, in ``weights_id`` and every embedding's ``extras``."""
        return "onnx-int8" if self.quantized else "onnx"

    def _open_sessions(self, encoder: Path, decoder: Path, threads: int | None, providers: list[str] | None) -> None:
        """Set ``threads`` and the ``_encoder``/``_decoder`` sessions (``run(None, feeds)`` -> outputs in
        graph order); with :meth:`_open_graph` the runtime-specific step, overridden by the OpenVINO backends."""
        ort = require("onnxruntime", "onnx")
        self.threads = int(threads) if threads else default_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: shape-merge notices on valid graphs are noise
        # no busy-waiting between runs: the numpy (or torch) work between decoder runs and
        # other processes get the cores (spinning cost 1.1-1.8x on the shared 2-core machine)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session_options = opts
        self._providers = providers or ["CPUExecutionProvider"]
        self._encoder = self._open_graph(encoder)
        self._decoder = self._open_graph(decoder)

    def _open_graph(self, path: Path) -> Any:
        """One graph of the export as an onnxruntime session."""
        ort = require("onnxruntime", "onnx")
        try:
            return ort.InferenceSession(str(path), self._session_options, providers=self._providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX models from {self.directory}: {str(exc).splitlines()[0][:300]}") from None

    def _open_staged(self) -> StagedSamDecoder | None:
        """The staged decoder (SAM, MobileSAM exports that have it), else None: the
        one-graph ``decoder.onnx`` then serves every prompt (slower; re-export with
        ``terramask models export-onnx --force`` to get the staged graphs)."""
        files = self.meta.get("files") or {}
        if self.meta.get("family") == "sam2":
            return None
        if not all(files.get(key) for key in STAGED):
            log.info("%s has no staged decoder (exported by an older terramask); prompts run the one-graph decoder",
                     self.directory)
            return None
        state, tokens, masks = (self._open_graph(self.directory / files[key]) for key in STAGED)
        return StagedSamDecoder(state, tokens, masks, low_res=self.low_res)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str], name: str | None = None, threads: int | None = None, quantized: bool = False) -> "OnnxSamBackend":
        return cls(directory, name=name, threads=threads, quantized=quantized)

    def __repr__(self) -> str:
        return f"OnnxSamBackend(name={self.name!r}, directory={str(self.directory)!r}, threads={self.threads}, quantized={self.quantized})"

    # -- image ----------------------------------------------------------------------
    def model_input(self, rgb8: np.ndarray) -> np.ndarray:
        """The encoder input ``(1, 3, S, S)`` float32 for an ``(H, W, 3)`` uint8 image."""
        return preprocess(rgb8, self.img_size, self._mean, self._std)[0]

    def set_image(self, image: GeoImage | np.ndarray) -> Embedding:
        """Encode an image: ``features`` is ``(1, 256, 64, 64)`` float32, ``input_size`` the
        resized ``(rows, cols)`` (longest side 1024), like :class:`SamBackend`."""
        rgb = as_rgb8(image)
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise InputError(f"cannot encode an empty image of shape {rgb.shape}")
        t0 = time.perf_counter()
        x, input_size = preprocess(rgb, self.img_size, self._mean, self._std)
        (features,) = self._encoder.run(None, {"image": x})
        extras: dict[str, Any] = {"runtime": self.runtime}
        if self.quantized:
            extras["note"] = "int8-quantised encoder: results differ from the float model"
        if isinstance(image, GeoImage):
            extras["transform"] = image.transform
            extras["crs"] = image.crs
        log.debug("ONNX %s encoded %s in %.3fs", self.name, rgb.shape[:2], time.perf_counter() - t0)
        return Embedding(
            model=self.name,
            features=np.ascontiguousarray(features, dtype=np.float32),
            image_size=(int(rgb.shape[0]), int(rgb.shape[1])),
            input_size=input_size,
            extras=extras,
        )

    def _features(self, embedding: Embedding) -> np.ndarray:
        if not isinstance(embedding, Embedding):
            raise InputError(f"expected an Embedding from set_image, got {type(embedding).__name__}")
        feats = embedding.features
        shape = (1, 256, self.grid, self.grid)
        if embedding.model != self.name or tuple(getattr(feats, "shape", ())) != shape:
            raise InputError(
                f"embedding was computed by model {embedding.model!r} with features of shape "
                f"{tuple(getattr(feats, 'shape', ()))}; model {self.name!r} needs its own set_image ({shape})"
            )
        if tuple(embedding.input_size) != preprocess_shape(*embedding.image_size, self.img_size):
            raise InputError(f"embedding input_size {embedding.input_size} does not match image_size {embedding.image_size}")
        return np.ascontiguousarray(feats, dtype=np.float32)

    def _to_model_frame(self, xy: np.ndarray, embedding: Embedding) -> np.ndarray:
        (rows, cols), (new_rows, new_cols) = embedding.image_size, embedding.input_size
        out = np.array(xy, dtype=np.float64, copy=True)
        out[..., 0] = out[..., 0] * (new_cols / cols)
        out[..., 1] = out[..., 1] * (new_rows / rows)
        return out.astype(np.float32)

    # -- decoding -------------------------------------------------------------------
    def _run_decoder(self, feats: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask: np.ndarray | None):
        low = self.low_res
        mask_input = np.zeros((1, 1, low, low), np.float32) if mask is None else np.ascontiguousarray(mask, np.float32)
        has_mask = np.array([0.0 if mask is None else 1.0], np.float32)
        logits, iou = self._decoder.run(
            None,
            {
                "image_embeddings": feats,
                "point_coords": np.ascontiguousarray(coords, np.float32),
                "point_labels": np.ascontiguousarray(labels, np.float32),
                "mask_input": mask_input,
                "has_mask_input": has_mask,
            },
        )
        return logits, iou

    def feature_map(self, embedding: Embedding) -> FeatureGrid:
        """The image embedding's cells over the image (:class:`~terramask.models.base.FeatureMap`):
        ``(256, h, w)`` float32 and the image pixels per cell."""
        return grid_feature_map(self._features(embedding), embedding.image_size, embedding.input_size, self.img_size,
                                self.low_res)

    def upscale_logits(self, embedding: Embedding, low_res: np.ndarray, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Low-res logits ``(N, 256, 256)`` -> logits ``(N, H, W)`` float32 on the image grid
        (SAM's ``postprocess_masks``), or only inside ``window = (x0, y0, x1, y1)``
        (:class:`terramask.models.upscale.Upscaler`, numpy engine)."""
        arr, win = upscale_arguments(low_res, self.low_res, embedding.image_size, window)
        return self._upscaler(arr, embedding.image_size, embedding.input_size, win)

    def predict(self, embedding: Embedding, prompts: Prompts, multimask: bool = True) -> MaskSet:
        """Same contract as :meth:`terramask.models.sam.backend.SamBackend.predict`."""
        low = self.low_res
        check_pixel_prompts(prompts, "SAM", low)
        t0 = time.perf_counter()
        feats = self._features(embedding)
        several = len(prompts.boxes) > 1
        if several:
            coords = self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), embedding)
            labels = np.tile(np.array([[2.0, 3.0]], np.float32), (len(coords), 1))
        else:
            parts_c, parts_l = [], []
            if len(prompts.points):
                parts_c.append(self._to_model_frame(prompts.points, embedding))
                parts_l.append(prompts.labels.astype(np.float32))
            if len(prompts.boxes):  # SAM: points first, then the box corners; no padding point
                parts_c.append(self._to_model_frame(prompts.boxes.reshape(2, 2), embedding))
                parts_l.append(np.array([2.0, 3.0], np.float32))
            elif len(prompts.points):  # SAM pads clicks without a box with a "not a point"
                parts_c.append(np.zeros((1, 2), np.float32))
                parts_l.append(np.array([-1.0], np.float32))
            coords = np.concatenate(parts_c)[None] if parts_c else np.zeros((1, 0, 2), np.float32)
            labels = np.concatenate(parts_l)[None] if parts_l else np.zeros((1, 0), np.float32)
        multi = multimask and not several
        sel = slice(1, None) if multi else slice(0, 1)
        if prompts.mask_logits is None and self._staged is not None:
            state = self._staged.image_state(embedding.features, feats)
            logits, iou = self._staged.decode(state, coords, labels, sel)
        else:
            mask = None if prompts.mask_logits is None else prompts.mask_logits[None]
            logits, iou = self._run_decoder(feats, coords, labels, mask)
            logits, iou = logits[:, sel], iou[:, sel]
        low_res = logits.reshape(-1, low, low)
        scores = iou.reshape(-1)
        if multi:
            order = np.argsort(-scores, kind="stable")
            low_res, scores = low_res[order], scores[order]
        masks = self.upscale_logits(embedding, low_res) > self.mask_threshold
        log.debug("ONNX %s decoded %d mask(s) in %.3fs", self.name, len(scores), time.perf_counter() - t0)
        return MaskSet(
            masks,
            scores.astype(np.float32),
            extras={"low_res_logits": np.ascontiguousarray(low_res, np.float32)},
            transform=embedding.extras.get("transform"),
            crs=embedding.extras.get("crs"),
        )

    def decode_points(self, embedding: Embedding, coords: np.ndarray, labels: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``coords (B, P, 2)`` image pixels, ``labels (B, P)`` -> multimask
        ``low_res_logits (B, 3, 256, 256)`` and ``iou_predictions (B, 3)`` (SAM's order),
        ``chunk`` prompts per decoder run (default :attr:`decode_chunk`)."""
        coords = np.asarray(coords, dtype=np.float64)
        labels = np.asarray(labels)
        if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
            raise InputError(f"decode_points needs coords (B, P, 2) and labels (B, P), got {coords.shape} and {labels.shape}")
        low = self.low_res
        b = coords.shape[0]
        if b == 0:
            return np.zeros((0, 3, low, low), np.float32), np.zeros((0, 3), np.float32)
        feats = self._features(embedding)
        model = self._to_model_frame(coords, embedding)
        pad_c = np.zeros((b, 1, 2), np.float32)
        pad_l = -np.ones((b, 1), np.float32)
        all_c = np.concatenate([model, pad_c], axis=1)
        all_l = np.concatenate([labels.astype(np.float32), pad_l], axis=1)
        out_low = np.empty((b, 3, low, low), np.float32)
        out_iou = np.empty((b, 3), np.float32)
        step = max(1, int(chunk or self.decode_chunk))
        state = None if self._staged is None else self._staged.image_state(embedding.features, feats)
        for s in range(0, b, step):
            if state is not None and self._staged is not None:
                logits, iou = self._staged.decode(state, all_c[s : s + step], all_l[s : s + step], slice(1, None))
            else:
                logits, iou = self._run_decoder(feats, all_c[s : s + step], all_l[s : s + step], None)
                logits, iou = logits[:, 1:], iou[:, 1:]
            out_low[s : s + step] = logits
            out_iou[s : s + step] = iou
        return out_low, out_iou

    def decode_selected(
        self, embedding: Embedding, coords: np.ndarray, select: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Two-stage single-point decoding for automatic generation (the
        :class:`~terramask.models.base.SelectivePointDecoder` capability, the contract of
        :meth:`terramask.models.sam.point_batches.SamPointScorer.decode`): ``coords (B, 2)``
        image pixels; low-res logits are formed only for the outputs ``select`` keeps
        (staged decoder), else taken from :meth:`decode_points`."""
        xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        if self._staged is None:
            all_low, all_iou = self.decode_points(embedding, xy[:, None, :], np.ones((len(xy), 1)))
            keep = np.asarray(select(all_iou), dtype=bool).reshape(all_iou.shape)
            r, k = np.nonzero(keep)
            return all_iou, r, k, all_low[r, k]
        staged = self._staged
        state = staged.image_state(embedding.features, self._features(embedding))
        model = self._to_model_frame(xy, embedding)[:, None, :]
        ious: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        ks: list[np.ndarray] = []
        lows_kept: list[np.ndarray] = []
        step = max(1, int(self.decode_chunk))
        for start in range(0, len(model), step):
            part = model[start : start + step]
            padded = np.concatenate([part, np.zeros((len(part), 1, 2), np.float32)], axis=1)
            labels = np.tile(np.array([[1.0, -1.0]], np.float32), (len(part), 1))
            iou, r, k, lo = staged.selected(state, padded, labels, select)
            ious.append(iou)
            rows.append(r + start)
            ks.append(k)
            lows_kept.append(lo)
        low = self.low_res
        if not ious:
            return np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, low, low), np.float32)
        return np.concatenate(ious), np.concatenate(rows).astype(np.int64), np.concatenate(ks).astype(np.int64), np.concatenate(lows_kept)


def open_onnx_backend(directory: str | os.PathLike[str], name: str | None = None, threads: int | None = None, quantized: bool = False) -> OnnxSamBackend:
    """The right ONNX backend for an export directory (SAM / MobileSAM or SAM 2)."""
    family = read_metadata(directory).get("family")
    if family == "sam2":
        from terramask.models.onnx.sam2_backend import OnnxSam2Backend

        return OnnxSam2Backend(directory, name=name, threads=threads, quantized=quantized)
    cls = OnnxSamBackend
    return cls(directory, name=name, threads=threads, quantized=quantized)
