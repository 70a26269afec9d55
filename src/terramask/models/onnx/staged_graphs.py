"""The traceable modules of the *staged* SAM decoder export: terramask's lean decoder
(:mod:`terramask.models.sam.decoder`, the one the PyTorch backend runs) cut into three
ONNX graphs, so ONNX Runtime and OpenVINO do the same (smaller) work as PyTorch instead of
running every prompt through the whole official decoder graph:

- ``decoder_state.onnx``: ``image_embeddings (1, C, h, w)`` -> the per-image tensors,
  computed once per image: ``src (1, N, C)`` (image tokens + the no-mask embedding) and
  layer 0's projections ``k0``, ``v0`` ``(H, N, d)`` and ``q0`` ``(1, N, H*d)``;
- ``decoder_tokens.onnx``: those four + ``point_coords (B, P, 2)`` (model frame, ``x, y``)
  and ``point_labels (B, P)`` float (1, 0, 2/3 box corners, -1 padding) ->
  ``iou_predictions (B, M)``, ``hyper (B, M, C/8)`` (the hypernetwork output of every
  mask token; index 0 is SAM's single-mask output) and ``keys (B, N, C)`` (the updated
  image tokens);
- ``decoder_masks.onnx``: ``keys (U, N, C)`` and ``hyper (U, K, C/8)`` -> low-res logits
  ``(U, K, 4h, 4w)``: each prompt's image tokens upscaled once, then only the ``K``
  masks asked for (automatic generation asks only the outputs whose predicted IoU passes).

No prior mask here: prompts with one run the official-graph ``decoder.onnx``.
``N = h * w``, ``C`` = 256, ``H`` heads of width ``d``, ``M`` = 4 mask tokens. Batch,
point and mask counts are dynamic; the graphs are traced with two prompts of two points
(a click + SAM's padding point), the shape the branches of the lean decoder were chosen
for (they stay correct, if not the cheapest form, for any other count).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from terramask.core.lazy import require
from terramask.models.sam import decoder as sam_decoder

if TYPE_CHECKING:
    from torch import nn


def embed_points(prompt_encoder: Any, coords: Any, labels: Any) -> Any:
    """SAM's ``PromptEncoder._embed_points`` without its padding (the caller pads):
    ``coords (B, P, 2)`` model frame, ``labels (B, P)`` float -> ``(B, P, C)``."""
    pe = prompt_encoder
    emb = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size)
    lab = labels.unsqueeze(-1)
    dtype = emb.dtype
    emb = emb * (lab != -1).to(dtype) + pe.not_a_point_embed.weight * (lab == -1).to(dtype)
    for k in range(pe.num_point_embeddings):
        emb = emb + pe.point_embeddings[k].weight * (lab == k).to(dtype)
    return emb


def image_to_token_rows(mod: Any, k_tok: Any, v_tok: Any, xq: Any = None, qh: Any = None) -> Any:
    """:func:`sam_decoder._image_to_token` (same maths, same reassociation) laid out for
    ONNX runtimes: scores as ``(B, N, H*T)`` rows, so both large products have the ``N``
    image tokens as their rows (onnxruntime's transposed-operand product, which the
    PyTorch layout exports to, ran ~3x slower) and the softmax over each head's ``T``
    tokens runs along the last axis. ``qh`` here is ``(1, N, H*d)`` (the state graph's
    ``q0``), ``xq`` ``(B, N, C)``; returns ``(B, N, C)``."""
    torch: Any = require("torch", "onnx")
    n_heads, ci = mod.num_heads, mod.internal_dim
    d = ci // n_heads
    bsz, t, c = k_tok.shape
    kp = sam_decoder._heads(mod.k_proj(k_tok), n_heads)  # (B, H, T, d)
    vp = sam_decoder._heads(mod.v_proj(v_tok), n_heads)
    if qh is not None:
        # block-diagonal keys (B, H*d, H*T): head h's queries meet only head h's keys
        eye = torch.eye(n_heads, dtype=kp.dtype, device=kp.device).reshape(1, n_heads, 1, n_heads, 1)
        blocks = kp.transpose(2, 3).unsqueeze(3) * eye  # (B, H, d, H, T)
        scores = qh @ blocks.reshape(bsz, n_heads * d, n_heads * t)  # (B, N, H*T)
    else:
        wq = mod.q_proj.weight.reshape(n_heads, d, c)
        a = torch.einsum("bhtd,hdc->bhtc", kp, wq).reshape(bsz, n_heads * t, c)
        a0 = torch.einsum("bhtd,hd->bht", kp, mod.q_proj.bias.reshape(n_heads, d)).reshape(bsz, 1, n_heads * t)
        scores = xq @ a.transpose(1, 2) + a0  # (B, N, H*T)
    n = scores.shape[1]
    attn = torch.softmax(scores.reshape(bsz, n, n_heads, t) * (1.0 / math.sqrt(d)), dim=-1)
    wo = mod.out_proj.weight.reshape(c, n_heads, d)
    m = torch.einsum("bhtd,chd->bhtc", vp, wo) + mod.out_proj.bias / n_heads
    return attn.reshape(bsz, n, n_heads * t) @ m.reshape(bsz, n_heads * t, c)


def sam_state_graph(sam: Any) -> nn.Module:
    """``image_embeddings (1, C, h, w)`` -> ``src, k0, v0, q0`` (:func:`sam_decoder.image_state`,
    ``q0`` as ``(1, N, H*d)`` for :func:`image_to_token_rows`)."""
    torch: Any = require("torch", "onnx")

    class SamStateGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sam = sam
            self.register_buffer("dense_pe", sam.prompt_encoder.get_dense_pe().detach().clone())

        def forward(self, image_embeddings):
            state = sam_decoder.image_state(self.sam, image_embeddings, self.dense_pe)
            h, n, d = state.q0.shape
            return state.src, state.k0, state.v0, state.q0.transpose(0, 1).reshape(1, n, h * d)

    return SamStateGraph().eval()


def sam_tokens_graph(sam: Any, grid: tuple[int, int]) -> nn.Module:
    """``src, k0, v0, q0, point_coords, point_labels`` -> ``iou_predictions (B, M)``,
    ``hyper (B, M, C/8)``, ``keys (B, N, C)`` (:func:`sam_decoder.transformer` for prompts
    without a prior mask, then the IoU head and every hypernetwork MLP)."""
    torch: Any = require("torch", "onnx")

    class SamTokensGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sam = sam
            pe = sam.prompt_encoder.get_dense_pe().detach().clone()
            self.register_buffer("pe", pe.flatten(2).transpose(1, 2).contiguous())

        def forward(self, src, k0, v0, q0, point_coords, point_labels):
            sam = self.sam
            sparse = embed_points(sam.prompt_encoder, point_coords, point_labels)
            state = sam_decoder.ImageState(src=src, pe=self.pe, k0=k0, v0=v0, q0=q0, grid=grid)
            ts = sam_decoder.transformer(sam, state, None, sparse, image_to_token=image_to_token_rows)
            mlps = sam.mask_decoder.output_hypernetworks_mlps
            hyper = torch.stack([mlp(ts.queries[:, t + 1, :]) for t, mlp in enumerate(mlps)], dim=1)
            return sam_decoder.iou_scores(sam, ts), hyper, ts.keys

    return SamTokensGraph().eval()


def sam_masks_graph(sam: Any, grid: tuple[int, int]) -> nn.Module:
    """``keys (U, N, C)``, ``hyper (U, K, C/8)`` -> low-res logits ``(U, K, 4h, 4w)``
    (the upscaling and mask product of :func:`sam_decoder.mask_logits`)."""
    torch: Any = require("torch", "onnx")

    class SamMasksGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = sam.mask_decoder

        def forward(self, keys, hyper):
            up = sam_decoder._upscaled(self.dec, keys)  # (U, 16N, C/8), block order
            return sam_decoder._unblock(hyper @ up.transpose(1, 2), grid)

    return SamMasksGraph().eval()
