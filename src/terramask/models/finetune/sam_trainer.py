"""Fine-tuning of SAM v1 and MobileSAM: prompt encoder + mask decoder (+ encoder LoRA).

Works on the official ``segment_anything`` ``Sam`` module a SAM/MobileSAM backend holds
(``backend.model``), trained in place, so the backend predicts with the current weights
(its per-image decoder cache is dropped after every step). Built by
:func:`terramask.models.resolve.load_trainer`, which checks the family.

Frames: prompts arrive in image pixels and are scaled to the model frame as the backend
does (``ResizeLongestSide``: ``x * input_cols / cols``); targets are built once per
object in the low-res frame (``(low, low)``, 4x coarser than the padded 1024 input).
Training uses the official ``PromptEncoder`` and ``MaskDecoder.predict_masks`` (all four
mask tokens): a single click takes SAM's multimask rule (tokens 1..3, smallest loss),
any other prompt token 0. A ``refine`` prompt trains the second round of an
interactive session: own first prediction as prior mask plus a correction click,
single output, as ``terramask eval``'s later clicks ask. The image encoder is frozen (``decoder``) or gets LoRA
adapters on its attention (``decoder+lora``), which then runs per step.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from terramask.core.errors import InputError, ModelError, OutputError
from terramask.io.atomic import atomic_output
from terramask.models.base import Backend, Embedding
from terramask.models.finetune import lora
from terramask.models.finetune.losses import sam_loss
from terramask.models.finetune.trainable import TRAIN_MODES, Collective, StepLosses, TrainItem
from terramask.models.torch_utils import torch_module

log = logging.getLogger(__name__)

GRAD_CLIP = 1.0


class SamTrainer:
    """A :class:`~terramask.models.finetune.trainable.Trainer` for a SAM-family backend.

    ``backend``: a SAM or MobileSAM backend (its ``model`` is the official ``Sam``);
    ``family``/``arch``: what the run directory records; ``mode``: ``decoder`` or
    ``decoder+lora``; AdamW with ``lr`` and ``weight_decay``; gradients clipped to norm 1.
    ``served``: the backend :attr:`backend` returns (an embedding-cache wrapper of
    ``backend``; only valid while the encoder is frozen), default ``backend``.
    """

    def __init__(
        self,
        backend: Any,
        family: str,
        arch: str,
        mode: str = "decoder",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        lora_rank: int = lora.DEFAULT_RANK,
        served: Backend | None = None,
    ) -> None:
        if mode not in TRAIN_MODES:
            raise InputError(f"unknown --train {mode!r}; use one of {', '.join(TRAIN_MODES)}")
        if not lr > 0:
            raise InputError(f"learning rate must be > 0, got {lr}")
        torch = torch_module()
        self._torch = torch
        self._inner = backend
        self._backend: Backend = served if served is not None else backend
        self.family, self.arch, self.mode = family, arch, mode
        self.model = backend.model
        self.device = backend.device
        self.img_size = int(backend.img_size)
        # SAM/MobileSAM describe their grid in ``arch``; SAM 2 backends carry ``low_res``
        self.low_res = int(backend.arch.low_res if hasattr(backend, "arch") else backend.low_res)
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = self._decoder_parameters()
        if mode == "decoder+lora":
            params += lora.add_lora(self.model.image_encoder, rank=lora_rank)
        for p in params:
            p.requires_grad_(True)
        self._params = params
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        with torch.no_grad():
            self._dense_pe = self._prompt_encoder().get_dense_pe()
        self._feature_cache: tuple[Any, Any] | None = None

    # -- what differs between families (overridden for SAM 2) ---------------------------
    #: state-dict prefixes of the modules that train (and that :meth:`load_decoder` loads)
    decoder_prefixes: tuple[str, ...] = ("prompt_encoder.", "mask_decoder.")

    def _decoder_parameters(self) -> list[Any]:
        return [*self.model.prompt_encoder.parameters(), *self.model.mask_decoder.parameters()]

    def _prompt_encoder(self) -> Any:
        return self.model.prompt_encoder

    def _checkpoint_object(self, state: dict[str, Any]) -> Any:
        """What the official loader reads: SAM v1 and MobileSAM take the plain state dict."""
        return state

    # -- protocol ---------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend, predicting with the current weights."""
        return self._backend

    def trainable_parameters(self) -> int:
        return int(sum(p.numel() for p in self._params))

    def prepare_target(self, embedding: Embedding, mask: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`Trainer.prepare_target`: resize to ``input_size`` (bilinear, > 0.5),
        pad to the model square, 4x4 area average (> 0.5) to ``(low, low)`` int8."""
        torch = self._torch
        F = torch.nn.functional
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(embedding.image_size):
            raise InputError(f"label grid {mask.shape} differs from the image grid {tuple(embedding.image_size)}")
        rows, cols = embedding.input_size
        planes = [mask] + ([np.asarray(ignore, dtype=bool)] if ignore is not None else [])
        x = torch.as_tensor(np.stack(planes).astype(np.float32))[None]
        x = F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, self.img_size - cols, 0, self.img_size - rows))
        x = F.avg_pool2d(x, kernel_size=self.img_size // self.low_res)[0]
        out = (x[0] > 0.5).numpy().astype(np.int8)
        cover = F.avg_pool2d(F.pad(torch.ones((1, 1, rows, cols)), (0, self.img_size - cols, 0, self.img_size - rows)),
                             kernel_size=self.img_size // self.low_res)[0, 0]
        invalid = (cover < 0.5).numpy()
        if ignore is not None:
            invalid |= (x[1] > 0.5).numpy()
        out[invalid] = -1
        return out

    def train_step(self, items: Sequence[TrainItem], total: int | None = None,
                   collective: Collective | None = None) -> StepLosses:
        """One AdamW step (see :meth:`Trainer.train_step`): each item one forward pass, its
        loss divided by ``total`` (default ``len(items)``); with ``collective`` the
        gradients are summed over the workers before clipping, so the replicas stay equal."""
        torch = self._torch
        n = len(items) if total is None else int(total)
        if n < 1 or (not items and collective is None):
            raise InputError("a training step needs at least one item")
        # the model stays in eval mode: SAM's decoder has no dropout or batch norm, and a
        # frozen encoder (TinyViT's cached attention biases) must not change behaviour
        self.optimizer.zero_grad(set_to_none=True)
        sums = np.zeros(4)
        for item in items:
            loss, focal, dice, iou_mse = self._item_loss(item)
            (loss / n).backward()
            sums += [float(v.detach()) for v in (loss, focal, dice, iou_mse)]
        if collective is not None:
            sums = self._sum_over_workers(sums, collective)
        means = sums / n
        finite = bool(np.isfinite(means).all())
        if finite:
            grads = [p.grad for p in self._params if p.grad is not None]
            finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            torch.nn.utils.clip_grad_norm_(self._params, GRAD_CLIP)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._refresh_backend()
        loss, focal, dice, iou_mse = (float(v) for v in means)
        return StepLosses(loss, focal, dice, iou_mse, finite=finite)

    def save_checkpoint(self, path: Path) -> None:
        """The whole model as a plain state dict under the official tensor names (adapters
        merged), as ``segment_anything``'s ``sam_model_registry``/MobileSAM load it."""
        state = lora.merged_state_dict(self.model)
        plain = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        self._save(Path(path), self._checkpoint_object(plain), "checkpoint")

    def load_decoder(self, path: Path) -> None:
        torch = self._torch
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ModelError(f"cannot read the checkpoint {path}: {exc}") from exc
        if isinstance(state.get("model"), dict):  # SAM 2's {"model": state_dict}
            state = state["model"]
        own = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        keys = [k for k in state if k.startswith(self.decoder_prefixes)]
        if not keys or any(k not in own or own[k].shape != state[k].shape for k in keys):
            raise ModelError(f"{path} does not hold this model's prompt encoder and mask decoder")
        with torch.no_grad():
            for k in keys:
                own[k].copy_(state[k])
        self._refresh_backend()

    def save_state(self, path: Path, extra: dict[str, Any]) -> None:
        trainable = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        state = {
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": self._torch.get_rng_state(),
            "extra_json": json.dumps(extra),
        }
        self._save(Path(path), state, "training state")

    def load_state(self, path: Path) -> dict[str, Any]:
        torch = self._torch
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in state["trainable"].items():
                    params[name].copy_(value)
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            extra = json.loads(state["extra_json"])
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot resume from {path}: {exc}; remove it to start the run again") from exc
        self._refresh_backend()
        return dict(extra)

    # -- internals --------------------------------------------------------------------
    def _sum_over_workers(self, sums: np.ndarray, collective: Collective) -> np.ndarray:
        """Sum the gradients and ``sums`` over the workers. A parameter that no worker's
        items reached keeps no gradient (AdamW then leaves it alone, as alone); one that
        only some reached gets zeros from the others."""
        torch = self._torch
        touched = np.array([p.grad is not None for p in self._params], dtype=np.float64)
        reduced = collective.sum_array(np.concatenate([sums, touched]))
        for p in self._params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        collective.sum_gradients([p.grad for p in self._params])
        for p, hit in zip(self._params, reduced[len(sums):], strict=True):
            if hit == 0:
                p.grad = None
        return np.asarray(reduced[: len(sums)])

    def _save(self, path: Path, obj: Any, what: str) -> None:
        try:
            with atomic_output(path) as tmp:
                self._torch.save(obj, tmp)
        except OutputError:
            raise
        except (OSError, RuntimeError) as exc:  # disk full: torch raises either
            raise OutputError(f"cannot write the {what} {path}: {exc}") from exc

    def _refresh_backend(self) -> None:
        # the SAM backend keeps the last image's decoder state (layer-0 projections of the
        # decoder weights): stale once the weights change
        if hasattr(self._inner, "_last"):
            self._inner._last = None

    def _features(self, item: TrainItem) -> Any:
        if self.mode == "decoder+lora":
            if item.image is None:
                raise InputError("decoder+lora training needs the image of every item (the encoder trains)")
            return self._encode(item.image)
        feats = item.embedding.features
        cached = self._feature_cache
        if cached is not None and cached[0] is feats:
            return cached[1]
        tensor = self._to_tensors(feats)
        self._feature_cache = (feats, tensor)
        return tensor

    def _to_tensors(self, feats: Any) -> Any:
        """An embedding's ``features`` (float32 numpy) as the decoder's input tensors."""
        return self._torch.as_tensor(np.asarray(feats, dtype=np.float32), device=self.device)

    def _encode(self, image: np.ndarray) -> Any:
        """Image encoder forward with gradients (adapters train); SamBackend.set_image's preprocessing."""
        from segment_anything.utils.transforms import ResizeLongestSide

        torch = self._torch
        resized = ResizeLongestSide(self.img_size).apply_image(np.ascontiguousarray(image))
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self.model.image_encoder(self.model.preprocess(x))

    def _model_frame(self, xy: np.ndarray, embedding: Embedding) -> np.ndarray:
        (rows, cols), (new_rows, new_cols) = embedding.image_size, embedding.input_size
        out = np.array(xy, dtype=np.float64, copy=True).reshape(-1, 2)
        out[:, 0] *= new_cols / cols
        out[:, 1] *= new_rows / rows
        return out.astype(np.float32)

    def _item_loss(self, item: TrainItem) -> tuple[Any, Any, Any, Any]:
        torch = self._torch
        feats = self._features(item)
        prompt, emb = item.prompt, item.embedding
        points = None
        if len(prompt.points):
            coords = torch.as_tensor(self._model_frame(prompt.points, emb)[None], device=self.device)
            labels = torch.as_tensor(np.asarray(prompt.labels, dtype=np.int64)[None], device=self.device)
            points = (coords, labels)
        boxes = None
        if prompt.box is not None:
            boxes = torch.as_tensor(self._model_frame(np.asarray(prompt.box).reshape(2, 2), emb).reshape(1, 4), device=self.device)
        target = torch.as_tensor(item.target, device=self.device)
        multimask, prior = prompt.single_click, None
        if prompt.refine and points is not None:
            points, prior = self._correction_round(feats, points, boxes, multimask, item.target)
            multimask = False
        logits, iou = self._decode(feats, points, boxes, prior)
        sel = slice(1, None) if multimask else slice(0, 1)
        return sam_loss(logits[0, sel], iou[0, sel], (target > 0).float(), target >= 0, multimask)

    def _correction_round(self, feats: Any, points: Any, boxes: Any, multimask: bool, target: np.ndarray) -> tuple[Any, Any]:
        """What an interactive session does after the first prediction, as ``terramask
        eval`` does it: the prediction (the candidate the IoU head rates best), computed
        without gradient, becomes the prior mask, and a click goes where the error is
        deepest (:func:`correction_click`). Returns
        the points with that click appended and the prior ``(1, 1, low, low)``."""
        torch = self._torch
        with torch.no_grad():
            logits, iou = self._decode(feats, points, boxes, None)
        sel = slice(1, None) if multimask else slice(0, 1)
        best = int(iou[0, sel].argmax())
        prior = logits[0, sel][best][None, None].detach()
        click = correction_click(prior[0, 0].cpu().numpy() > 0, target)
        if click is None:
            return points, prior
        x, y, label = click
        scale = self.img_size / self.low_res  # low-res pixel centre -> model frame
        xy = torch.tensor([[[(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5]]], dtype=points[0].dtype, device=self.device)
        lab = torch.tensor([[label]], dtype=points[1].dtype, device=self.device)
        return (torch.cat([points[0], xy], dim=1), torch.cat([points[1], lab], dim=1)), prior

    def _decode(self, feats: Any, points: Any, boxes: Any, prior: Any = None) -> tuple[Any, Any]:
        """Every mask token's low-res logits ``(1, 4, low, low)`` and IoU ``(1, 4)``;
        ``prior``: a ``(1, 1, low, low)`` mask prompt (logits) or None."""
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=prior)
        return self.model.mask_decoder.predict_masks(
            image_embeddings=feats, image_pe=self._dense_pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense
        )


def correction_click(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int] | None:
    """``(x, y, label)`` on the low-res grid: the click simulator's rule on ``pred``
    ``(low, low)`` bool against ``target`` (int8: 1 object, 0 background, -1 not counted):
    the pixel deepest inside an error, label 1 in missed object, 0 in spilled background;
    None when the prediction has no error."""
    import cv2

    missed = (target == 1) & ~pred
    spilled = (target == 0) & pred
    best: tuple[float, int, int, int] | None = None
    for region, label in ((missed, 1), (spilled, 0)):
        if not region.any():
            continue
        depth = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        flat = int(np.argmax(depth))
        y, x = divmod(flat, depth.shape[1])
        if best is None or depth[y, x] > best[0]:
            best = (float(depth[y, x]), x, y, label)
    return None if best is None else best[1:]
