"""The traceable modules :mod:`terramask.models.onnx.export` exports: SAM's prompt
encoder + mask decoder with the prompt batch and point count as dynamic graph inputs, and
SAM 2's encoder and decoder with its high-resolution features as explicit tensors.
Signatures: see :mod:`terramask.models.onnx.export`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from terramask.core.lazy import require
from terramask.models.onnx.staged_graphs import embed_points

if TYPE_CHECKING:
    from torch import nn

# torch is imported lazily (``require``) and bound as ``Any``: the graph classes subclass
# ``torch.nn.Module`` at call time and work on upstream modules that are untyped anyway.


def sam_decoder_graph(sam: Any) -> nn.Module:
    """A ``torch.nn.Module`` computing SAM's prompt encoder + mask decoder with batch and
    point counts as graph inputs (see the module docstring for the signature)."""
    torch: Any = require("torch", "onnx")

    class SamDecoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.prompt_encoder = sam.prompt_encoder
            self.mask_decoder = sam.mask_decoder
            self.register_buffer("dense_pe", sam.prompt_encoder.get_dense_pe().detach().clone())

        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
            pe, dec = self.prompt_encoder, self.mask_decoder
            sparse = embed_points(pe, point_coords, point_labels)
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = pe.mask_downscaling(mask_input) * has_mask_input + no_mask * (1.0 - has_mask_input)
            # MaskDecoder.predict_masks with broadcasting instead of repeat_interleave, so
            # the prompt batch stays a dynamic dimension of the graph
            b = sparse.shape[0]
            tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
            tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
            src = image_embeddings.expand(b, -1, -1, -1) + dense
            pos = self.dense_pe.expand(b, -1, -1, -1)
            _, c, h, w = image_embeddings.shape
            hs, src = dec.transformer(src, pos, tokens)
            iou_out = hs[:, 0, :]
            mask_out = hs[:, 1 : 1 + dec.num_mask_tokens, :]
            up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
            hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
            uc, uh, uw = up.shape[1], up.shape[2], up.shape[3]
            masks = (hyper @ up.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
            return masks, dec.iou_prediction_head(iou_out)

    return SamDecoderGraph().eval()


def sam2_encoder_graph(model: Any, feat_sizes: Sequence[tuple[int, int]]) -> nn.Module:
    """SAM 2 image encoder up to the decoder's inputs: ``image (1, 3, S, S)`` (the
    official ``SAM2Transforms`` output) -> ``image_embed (1, 256, S/16, S/16)``,
    ``high_res_0 (1, 32, S/4, S/4)``, ``high_res_1 (1, 64, S/8, S/8)``, exactly what
    ``SAM2ImagePredictor.set_image`` stores (``conv_s0``/``conv_s1`` applied, ``no_mem_embed``
    added)."""
    torch: Any = require("torch", "onnx")

    class Sam2EncoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model.forward_image(image)
            _, feats, _, _ = self.model._prepare_backbone_features(out)
            if self.model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + self.model.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, h, w) for f, (h, w) in zip(feats[::-1], feat_sizes[::-1], strict=True)][::-1]
            return maps[-1], maps[0], maps[1]

    return Sam2EncoderGraph().eval()


def sam2_decoder_graph(model: Any) -> nn.Module:
    """SAM 2 prompt encoder + mask decoder with dynamic prompt batch and point count.

    Inputs: ``image_embed``, ``high_res_0``, ``high_res_1``, ``point_coords (B, N, 2)``
    (model frame, the image stretched to S x S; the caller appends SAM 2's padding point),
    ``point_labels (B, N)``, ``mask_input (1|B, 1, 256, 256)``, ``has_mask_input (1,)``.
    Outputs ``low_res_logits (B, 4, 256, 256)`` and ``iou_predictions (B, 4)`` (sigmoid,
    as upstream) for all mask tokens; the single-mask stability fallback is applied by
    the caller on these.
    """
    torch: Any = require("torch", "onnx")
    pe, dec = model.sam_prompt_encoder, model.sam_mask_decoder

    class Sam2DecoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pe, self.dec = pe, dec
            self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone())

        def forward(self, image_embed, high_res_0, high_res_1, point_coords, point_labels, mask_input, has_mask_input):
            pe, dec = self.pe, self.dec
            sparse = pe._embed_points(point_coords, point_labels, pad=False)
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = pe.mask_downscaling(mask_input) * has_mask_input + no_mask * (1.0 - has_mask_input)
            b = sparse.shape[0]
            heads = [dec.iou_token.weight, dec.mask_tokens.weight]
            s = 0
            if dec.pred_obj_scores:
                heads = [dec.obj_score_token.weight] + heads
                s = 1
            tokens = torch.cat(heads, dim=0)
            tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
            src = image_embed.expand(b, -1, -1, -1) + dense
            pos = self.dense_pe.expand(b, -1, -1, -1)
            _, c, h, w = image_embed.shape
            hs, src = dec.transformer(src, pos, tokens)
            iou_out = hs[:, s, :]
            mask_out = hs[:, s + 1 : s + 1 + dec.num_mask_tokens, :]
            src = src.transpose(1, 2).reshape(b, c, h, w)
            dc1, ln1, act1, dc2, act2 = dec.output_upscaling
            up = act1(ln1(dc1(src) + high_res_1))
            up = act2(dc2(up) + high_res_0)
            hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
            uc, uh, uw = up.shape[1], up.shape[2], up.shape[3]
            masks = (hyper @ up.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
            return masks, dec.iou_prediction_head(iou_out)

    return Sam2DecoderGraph().eval()
