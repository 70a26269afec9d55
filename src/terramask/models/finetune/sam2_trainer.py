"""Fine-tuning of SAM 2 / 2.1: its prompt encoder and mask decoder, image encoder frozen.

Same recipe and protocol as :class:`~terramask.models.finetune.sam_trainer.SamTrainer`
(which see), on the official ``sam2`` modules a SAM 2 backend holds. Differences:

- the embedding is ``{"image_embed", "high_res_feats"}``; the high-resolution features
  were already projected by the decoder's ``conv_s0``/``conv_s1`` when the image was
  embedded, so those two convolutions stay frozen (the cached embeddings stay valid);
- SAM 2 stretches the image to 1024 x 1024 (``input_size`` says so: no padding in the
  targets) and takes a box as two points labelled 2 and 3 before the clicks, as
  ``SAM2ImagePredictor`` does;
- the checkpoint is ``{"model": state_dict}`` (what ``build_sam2`` loads), keeping the
  base file's embedded configuration when it has one;
- no encoder adapters (``decoder+lora`` is SAM v1/MobileSAM only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from terramask.core.errors import InputError
from terramask.models.finetune.sam_trainer import SamTrainer
from terramask.models.torch_utils import torch_module

FROZEN_DECODER_PARTS = ("conv_s0.", "conv_s1.")


class Sam2Trainer(SamTrainer):
    """A :class:`~terramask.models.finetune.trainable.Trainer` for a SAM 2 backend."""

    decoder_prefixes = ("sam_prompt_encoder.", "sam_mask_decoder.")

    def __init__(self, backend: Any, family: str, arch: str, mode: str = "decoder", **kwargs: Any) -> None:
        if mode != "decoder":
            raise InputError("SAM 2 fine-tuning trains the decoder only; use --train decoder (adapters: SAM v1/MobileSAM)")
        self._config_yaml = _embedded_config(getattr(backend, "source", None))
        super().__init__(backend, family, arch, mode=mode, **kwargs)

    def _decoder_parameters(self) -> list[Any]:
        dec = [p for n, p in self.model.sam_mask_decoder.named_parameters() if not n.startswith(FROZEN_DECODER_PARTS)]
        return [*self.model.sam_prompt_encoder.parameters(), *dec]

    def _prompt_encoder(self) -> Any:
        return self.model.sam_prompt_encoder

    def _checkpoint_object(self, state: dict[str, Any]) -> Any:
        obj: dict[str, Any] = {"model": state}
        if self._config_yaml is not None:
            obj["terramask_config"] = self._config_yaml
        return obj

    def _to_tensors(self, feats: Any) -> Any:
        torch = self._torch
        if not isinstance(feats, dict):
            raise InputError("a SAM 2 embedding holds image_embed and high_res_feats")
        embed = torch.as_tensor(np.asarray(feats["image_embed"], dtype=np.float32), device=self.device)
        high = [torch.as_tensor(np.asarray(f, dtype=np.float32), device=self.device) for f in feats["high_res_feats"]]
        return embed, high

    def _decode(self, feats: Any, points: Any, boxes: Any, prior: Any = None) -> tuple[Any, Any]:
        torch = self._torch
        embed, high = feats
        if boxes is not None:
            corners = boxes.reshape(1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int64, device=self.device)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=prior)
        masks, iou, _, _ = self.model.sam_mask_decoder.predict_masks(
            image_embeddings=embed, image_pe=self._dense_pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=False, high_res_features=high,
        )
        return masks, iou


def _embedded_config(source: str | None) -> str | None:
    """The configuration YAML a terramask-written SAM 2 file carries, if any."""
    if not source:
        return None
    torch = torch_module()
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError):
        return None
    cfg = obj.get("terramask_config") if isinstance(obj, dict) else None
    return cfg if isinstance(cfg, str) else None
