"""A lean forward pass of SAM's mask decoder (same weights, same maths, less work).

Computes what ``segment_anything.modeling.MaskDecoder`` + ``TwoWayTransformer`` compute,
from the official modules' weights, with results equal within float rounding (the parity
tests compare it with the official ``SamPredictor``). It is organised for interactive
clicks and batched automatic generation:

- **Per-image work done once.** Without a prior mask the first layer's image-side
  projections (keys/values of the token-to-image attention, queries of the
  image-to-token attention) depend only on the image: :func:`image_state` computes them
  once per image instead of once per prompt.
- **Few tokens, many pixels: reassociate.** A prompt has ``T`` tokens (5 output tokens +
  points/box corners) against ``N = 4096`` image tokens. Projecting all image tokens
  costs ``N*C*Ci`` per projection; folding the projection into the tokens' side instead
  (``q·(W x) = (Wᵀq)·x``, and attention rows summing to one for values) costs
  ``N*C*H*T``, about half for a click (``H*T = 56 < Ci = 128``). The code picks the
  cheaper form for each attention.
- **Transposed convolutions as matrix products** in channels-last layout (a stride-2,
  kernel-2 ``ConvTranspose2d`` is one matmul and a pixel shuffle), and only the mask tokens
  that are returned (3 for multimask, 1 otherwise) are turned into masks.
- Softmax over the few prompt tokens runs along a non-last axis (PyTorch's CPU softmax is
  slow over a short last axis).

Shapes: ``N = h * w`` image tokens, ``C`` = 256 channels, ``Ci`` = 128 attention width,
``H`` = 8 heads of ``d`` = 16, ``B`` prompts, ``T`` tokens per prompt. Image-side
tensors have batch ``b`` = 1 (shared by every prompt) or ``B``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from terramask.models.torch_utils import torch_module


@dataclass
class ImageState:
    """Per-image tensors reused by every prompt of that image (no prior mask).

    ``src (1, N, C)``: image tokens + the no-mask embedding; ``pe (1, N, C)``: positional
    encoding; ``k0``, ``v0``, ``q0`` ``(H, N, d)``: layer 0's token-to-image keys and
    values and image-to-token queries; ``grid``: ``(h, w)``.
    """

    src: Any
    pe: Any
    k0: Any
    v0: Any
    q0: Any
    grid: tuple[int, int]


def _heads(x, n_heads: int):
    """``(b, n, H*d)`` -> ``(b, H, n, d)`` (a view)."""
    b, n, c = x.shape
    return x.reshape(b, n, n_heads, c // n_heads).transpose(1, 2)


def _merge(x):
    """``(b, H, n, d)`` -> ``(b, n, H*d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _matmul_shared(a, x_t):
    """``a (B, M, K) @ x_t (b, K, N)`` with ``b`` 1 or ``B``, without expanding a shared ``x_t``."""
    if x_t.shape[0] == 1 and a.shape[0] != 1:
        bsz, m, k = a.shape
        return (a.reshape(bsz * m, k) @ x_t[0]).reshape(bsz, m, -1)
    return a @ x_t


def _self_attention(mod, q, k, v):
    """``Attention.forward`` on the prompt tokens (small tensors)."""
    torch = torch_module()
    h = mod.num_heads
    qh, kh, vh = _heads(mod.q_proj(q), h), _heads(mod.k_proj(k), h), _heads(mod.v_proj(v), h)
    attn = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]), dim=-1)
    return mod.out_proj(_merge(attn @ vh))


def _token_to_image(mod, q_tok, xk=None, xv=None, kh=None, vh=None):
    """Attention of prompt tokens ``q_tok (B, T, C)`` over image tokens -> ``(B, T, C)``.

    Either projected keys/values ``kh``, ``vh`` ``(H, N, d)`` (shared by all prompts) are
    given, or the image-side inputs ``xk`` (keys + pe) and ``xv`` ``(b, N, C)``.
    """
    torch = torch_module()
    n_heads, ci = mod.num_heads, mod.internal_dim
    d = ci // n_heads
    bsz, t, c = q_tok.shape
    qh = _heads(mod.q_proj(q_tok), n_heads)  # (B, H, T, d)
    scale = 1.0 / math.sqrt(d)
    if kh is not None:
        # shared projected keys: fold the prompts into the token axis
        qf = qh.transpose(0, 1).reshape(n_heads, bsz * t, d)
        attn = torch.softmax((qf @ kh.transpose(-1, -2)) * scale, dim=-1)  # (H, B*T, N)
        out = (attn @ vh).reshape(n_heads, bsz, t, d).permute(1, 2, 0, 3).reshape(bsz, t, ci)
        return mod.out_proj(out)
    if n_heads * t >= ci:
        kp = _heads(mod.k_proj(xk), n_heads)
        vp = _heads(mod.v_proj(xv), n_heads)
        attn = torch.softmax((qh @ kp.transpose(-1, -2)) * scale, dim=-1)
        return mod.out_proj(_merge(attn @ vp))
    # reassociated: scores = (W_k^T q) . x (the key bias adds a per-row constant, which
    # softmax ignores); values: (attn @ x) W_v^T + b_v (attention rows sum to one)
    wk = mod.k_proj.weight.reshape(n_heads, d, c)
    a = torch.einsum("bhtd,hdc->bhtc", qh, wk).reshape(bsz, n_heads * t, c)
    attn = torch.softmax(_matmul_shared(a, xk.transpose(1, 2)) * scale, dim=-1)  # (B, H*T, N)
    ctx = _matmul_shared(attn, xv).reshape(bsz, n_heads, t, c)
    wv = mod.v_proj.weight.reshape(n_heads, d, c)
    out = torch.einsum("bhtc,hdc->bthd", ctx, wv).reshape(bsz, t, ci) + mod.v_proj.bias
    return mod.out_proj(out)


def _image_to_token(mod, k_tok, v_tok, xq=None, qh=None):
    """Attention of image tokens over prompt tokens -> ``(B, N, C)``.

    ``k_tok`` (tokens + pe) and ``v_tok`` ``(B, T, C)``; either projected shared queries
    ``qh (H, N, d)`` or the image-side input ``xq (b, N, C)`` (keys + pe). The softmax over
    the ``T`` tokens runs on a ``(.., T, N)`` layout.
    """
    torch = torch_module()
    n_heads, ci = mod.num_heads, mod.internal_dim
    d = ci // n_heads
    bsz, t, c = k_tok.shape
    kp = _heads(mod.k_proj(k_tok), n_heads)  # (B, H, T, d)
    vp = _heads(mod.v_proj(v_tok), n_heads)
    scale = 1.0 / math.sqrt(d)
    if qh is not None:
        kf = kp.transpose(0, 1).reshape(n_heads, bsz * t, d)
        scores = (kf @ qh.transpose(-1, -2)).reshape(n_heads, bsz, t, -1).transpose(0, 1)  # (B, H, T, N)
    elif n_heads * t >= ci:
        qp = _heads(mod.q_proj(xq), n_heads)  # (b, H, N, d)
        scores = kp @ qp.transpose(-1, -2)  # (B, H, T, N)
    else:
        wq = mod.q_proj.weight.reshape(n_heads, d, c)
        a = torch.einsum("bhtd,hdc->bhtc", kp, wq).reshape(bsz, n_heads * t, c)
        a0 = torch.einsum("bhtd,hd->bht", kp, mod.q_proj.bias.reshape(n_heads, d)).reshape(bsz, n_heads * t, 1)
        scores = (_matmul_shared(a, xq.transpose(1, 2)) + a0).reshape(bsz, n_heads, t, -1)
    attn = torch.softmax(scores * scale, dim=2)  # over the T prompt tokens
    # out_proj folded into the values: sum_{h,t} attn[h,t,n] * (v[h,t] W_o[:, h]^T) + b_o;
    # each head's weights sum to one over t, so b_o / H added to every value row adds b_o
    wo = mod.out_proj.weight.reshape(c, n_heads, d)
    m = torch.einsum("bhtd,chd->bhtc", vp, wo) + mod.out_proj.bias / n_heads
    n = attn.shape[-1]
    return attn.reshape(bsz, n_heads * t, n).transpose(1, 2) @ m.reshape(bsz, n_heads * t, c)


def image_state(sam, features, dense_pe) -> ImageState:
    """Precompute the per-image part of the decoder for ``features (1, C, h, w)``."""
    h, w = int(features.shape[-2]), int(features.shape[-1])
    no_mask = sam.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1)
    src = features.flatten(2).transpose(1, 2) + no_mask
    pe = dense_pe.flatten(2).transpose(1, 2).contiguous()
    k0, v0, q0 = _layer0_projections(sam.mask_decoder.transformer.layers[0], src, pe)
    return ImageState(src=src.contiguous(), pe=pe, k0=k0, v0=v0, q0=q0, grid=(h, w))


def _layer0_projections(layer0, src, pe):
    t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
    k = src + pe
    return (
        _heads(t2i.k_proj(k), t2i.num_heads)[0].contiguous(),
        _heads(t2i.v_proj(src), t2i.num_heads)[0].contiguous(),
        _heads(i2t.q_proj(k), i2t.num_heads)[0].contiguous(),
    )


def _upscale_and_masks(dec, keys, hyper, grid):
    """``output_upscaling`` (two stride-2 transposed convs) and the hypernetwork product.

    ``keys (B, N, C)`` row-major over ``grid (h, w)``; ``hyper (B, K, C/8)``. Returns mask
    logits ``(B, K, 4h, 4w)``.
    """
    torch = torch_module()
    F = torch.nn.functional
    conv1, ln, act1, conv2, act2 = dec.output_upscaling
    bsz = keys.shape[0]
    h, w = grid
    c1, c2 = conv1.out_channels, conv2.out_channels
    # (C_in, O, 2, 2) -> (C_in, 2*2*O): rows of the product hold the 2x2 children of a pixel
    # Pixels stay in "children order" (b, y, x, i1, j1, i2, j2) until the end: the layer
    # norm (over channels) and the second conv act per pixel, so their order is free.
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)
    y = torch.addmm(conv1.bias.repeat(4), keys.reshape(bsz * h * w, -1), w1).reshape(-1, c1)
    y = act1(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    z = act2(torch.addmm(conv2.bias.repeat(4), y, w2))  # (B*h*w*4, 4*c2)
    k = hyper.shape[1]
    masks = z.reshape(bsz, -1, c2) @ hyper.transpose(1, 2)  # (B, h*w*16, K)
    # (b, y, x, i1, j1, i2, j2, k) -> (b, k, y, i1, i2, x, j1, j2): row 4y+2i1+i2, col 4x+2j1+j2
    masks = masks.reshape(bsz, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(bsz, k, 4 * h, 4 * w)


def decode(sam, state: ImageState, features, sparse, mask_dense=None, multimask: bool = True):
    """Low-res mask logits and predicted IoU for ``B`` prompts.

    ``sparse (B, T', C)`` from the prompt encoder; ``mask_dense`` ``(1 or B, C, h, w)``
    embedding of a prior mask or ``None``. Returns ``low_res (B, K, 4h, 4w)`` and
    ``iou (B, K)``, ``K = 3`` for multimask else 1, in SAM's token order.
    """
    torch = torch_module()
    dec = sam.mask_decoder
    tr = dec.transformer
    bsz = sparse.shape[0]
    pe = state.pe

    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(bsz, -1, -1), sparse], dim=1)

    if mask_dense is None:
        keys, k0, v0, q0 = state.src, state.k0, state.v0, state.q0
    else:
        keys = features.flatten(2).transpose(1, 2) + mask_dense.flatten(2).transpose(1, 2)
        if keys.shape[0] == 1:
            k0, v0, q0 = _layer0_projections(tr.layers[0], keys, pe)
        else:
            k0 = v0 = q0 = None

    queries, query_pe = tokens, tokens
    for i, layer in enumerate(tr.layers):
        if layer.skip_first_layer_pe:
            queries = _self_attention(layer.self_attn, queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + _self_attention(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)

        shared = i == 0 and k0 is not None
        kp = None if shared else keys + pe
        q = queries + query_pe
        if shared:
            attn_out = _token_to_image(layer.cross_attn_token_to_image, q, kh=k0, vh=v0)
        else:
            attn_out = _token_to_image(layer.cross_attn_token_to_image, q, xk=kp, xv=keys)
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))

        q = queries + query_pe
        if shared:
            attn_out = _image_to_token(layer.cross_attn_image_to_token, q, queries, qh=q0)
        else:
            attn_out = _image_to_token(layer.cross_attn_image_to_token, q, queries, xq=kp)
        keys = layer.norm4(keys + attn_out)

    q = queries + query_pe
    queries = tr.norm_final_attn(queries + _token_to_image(tr.final_attn_token_to_image, q, xk=keys + pe, xv=keys))

    sel = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
    hyper = torch.stack([dec.output_hypernetworks_mlps[j](queries[:, 1 + j, :]) for j in sel], dim=1)
    masks = _upscale_and_masks(dec, keys, hyper, state.grid)
    iou = dec.iou_prediction_head(queries[:, 0, :])[:, sel.start : sel.stop]
    return masks, iou
