"""An official ``segment_anything`` SAM whose decoder gives masks with structure.

Random weights give mask logits that are spatially noisy: every candidate covers the whole
image, so box NMS leaves one mask and parity tests of automatic generation would test
almost nothing. Here the official tiny SAM (``helpers.tiny_sam``) keeps its image encoder
and prompt-encoder positional encoding, but

- :class:`CoordPromptEncoder` passes the point's model-frame coordinates through the
  sparse embedding, and
- :class:`StructuredDecoder` returns, for a point ``p``, three disc-shaped masks around
  ``p`` (radii 60/120/220 model pixels, edges of different sharpness so stability scores
  differ) roughened by the image embedding, and a predicted IoU that varies with ``p``.

By default the ViT is replaced by :class:`PooledEncoder` (pooling and a fixed random
projection), so tests with many crops stay fast.

The official :class:`segment_anything.SamAutomaticMaskGenerator` runs it unchanged, and
:class:`StructuredBackend` exposes the same model on terramask's backend protocol
(``set_image`` / ``decode_points`` / ``upscale_logits``, computed exactly like
``SamPredictor`` and ``Sam.postprocess_masks``), so both generators see the same logits.
"""

from __future__ import annotations

import numpy as np

from terramask.models.base import Embedding, as_rgb8

RADII = (60.0, 120.0, 220.0)
SHARPNESS = (0.8, 0.25, 0.08)
TEXTURE = 1.5


def _torch():
    import torch

    return torch


class CoordPromptEncoder(_torch().nn.Module):
    """Sparse embedding ``(B, 2, C)`` whose first token holds the first point's (x, y)."""

    def __init__(self, base) -> None:
        super().__init__()
        self.base = base
        self.embed_dim = base.embed_dim

    def get_dense_pe(self):
        return self.base.get_dense_pe()

    def forward(self, points=None, boxes=None, masks=None):
        torch = _torch()
        coords, _labels = points
        b = coords.shape[0]
        sparse = torch.zeros((b, 2, self.embed_dim), dtype=torch.float32, device=coords.device)
        sparse[:, 0, :2] = coords[:, 0, :].float()
        h, w = self.base.image_embedding_size
        dense = self.base.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        return sparse, dense


class PooledEncoder(_torch().nn.Module):
    """A cheap image encoder: 16x16 average pooling and a fixed random 1x1 projection to
    ``(1, 256, 64, 64)``, so tests with many crops do not spend their time encoding."""

    def __init__(self, img_size: int = 1024, seed: int = 0) -> None:
        super().__init__()
        torch = _torch()
        self.img_size = img_size
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(256, 3, generator=g))

    def forward(self, x):
        torch = _torch()
        pooled = torch.nn.functional.avg_pool2d(x, 16)  # (1, 3, 64, 64)
        return torch.tanh(torch.einsum("oc,bchw->bohw", self.weight, pooled))


class StructuredDecoder(_torch().nn.Module):
    """Disc masks around the prompt point, modulated by the image embedding."""

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        torch = _torch()
        p = sparse_prompt_embeddings[:, 0, :2].float()  # (B, 2) model frame
        low = 4 * image_embeddings.shape[-1]
        centres = torch.arange(low, dtype=torch.float32) * 4.0 + 1.5
        dx = centres[None, None, :] - p[:, 0, None, None]
        dy = centres[None, :, None] - p[:, 1, None, None]
        dist = torch.sqrt(dx * dx + dy * dy)  # (B, low, low)
        tex = image_embeddings[0, 0].float()
        tex = (tex - tex.mean()) / (tex.std() + 1e-6)
        tex = tex.repeat_interleave(4, 0).repeat_interleave(4, 1)
        masks, ious = [], []
        for k, (r, s) in enumerate(zip(RADII, SHARPNESS)):
            masks.append(s * (r - dist) + TEXTURE * tex)
            ious.append(0.5 + 0.45 * torch.sin(0.013 * p[:, 0] + 0.017 * p[:, 1] + 1.3 * k))
        masks = torch.stack(masks, dim=1)
        iou = torch.stack(ious, dim=1)
        if not multimask_output:
            return masks[:, :1], iou[:, :1]
        return masks, iou


def build_structured_sam(checkpoint, pooled_encoder: bool = True):
    """The official tiny SAM from ``checkpoint`` with the structured prompt path (and,
    by default, the cheap :class:`PooledEncoder` instead of the ViT)."""
    from helpers.tiny_sam import build_official_sam

    sam = build_official_sam(checkpoint)
    if pooled_encoder:
        sam.image_encoder = PooledEncoder(sam.image_encoder.img_size)
    sam.prompt_encoder = CoordPromptEncoder(sam.prompt_encoder)
    sam.mask_decoder = StructuredDecoder()
    return sam.eval()


class StructuredBackend:
    """Backend protocol over an official ``Sam`` (any decoder), computed like ``SamPredictor``."""

    name = "structured-sam"
    mask_threshold = 0.0
    img_size = 1024

    def __init__(self, sam) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.decode_calls = 0

    def set_image(self, image) -> Embedding:
        torch = _torch()
        rgb = as_rgb8(image)
        resized = self.transform.apply_image(rgb)
        with torch.inference_mode():
            x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
            feats = self.sam.image_encoder(self.sam.preprocess(x))
        return Embedding(self.name, feats.numpy(), tuple(rgb.shape[:2]), tuple(resized.shape[:2]))

    def decode_points(self, embedding, coords, labels):
        torch = _torch()
        self.decode_calls += 1
        c = self.transform.apply_coords(np.asarray(coords, dtype=np.float64), embedding.image_size)
        with torch.inference_mode():
            sparse, dense = self.sam.prompt_encoder(points=(torch.as_tensor(c), torch.as_tensor(labels)), boxes=None, masks=None)
            low, iou = self.sam.mask_decoder(
                image_embeddings=torch.as_tensor(embedding.features),
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        return low.numpy().astype(np.float32), iou.numpy().astype(np.float32)

    def upscale_logits(self, embedding, low_res, window=None):
        torch = _torch()
        with torch.inference_mode():
            up = self.sam.postprocess_masks(torch.as_tensor(np.asarray(low_res))[:, None], embedding.input_size, embedding.image_size)
        up = up[:, 0].numpy()
        if window is not None:
            x0, y0, x1, y1 = window
            up = up[:, y0:y1, x0:x1]
        return np.ascontiguousarray(up, dtype=np.float32)
