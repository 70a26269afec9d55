"""The one SAM mask decoder of terramask: a lean forward pass (same weights, same maths,
less work) serving single clicks and automatic generation's point batches.

Computes what ``segment_anything.modeling.MaskDecoder`` + ``TwoWayTransformer`` compute,
from the official modules' weights, with results equal within float rounding (the parity
tests compare it with the official ``SamPredictor`` and automatic generator). It is split
in two stages: :func:`transformer` (tokens and updated image tokens, :class:`TokenState`)
with :func:`iou_scores`, then masks: :func:`mask_logits` for every prompt (a click,
:func:`decode`) or :func:`selected_mask_logits` for chosen (prompt, output) pairs only
(automatic generation decodes only outputs whose predicted IoU passes its filter,
:mod:`terramask.models.sam.point_batches`). Savings:

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
  that are asked for are turned into masks (3 for multimask, 1 otherwise, or the selected
  ones), each prompt's image tokens upscaled once.
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


@dataclass
class TokenState:
    """Transformer output for ``B`` prompts of one image.

    ``queries (B, T, C)``: output tokens after the final attention (index 0 the IoU token,
    ``1..M`` the ``M`` mask tokens, M = 4 for SAM: index 1 is the single-mask output);
    ``keys (B, N, C)``: the updated image tokens the masks are decoded from; ``grid``
    ``(h, w)`` of the image tokens.
    """

    queries: Any
    keys: Any
    grid: tuple[int, int]


def transformer(sam, state: ImageState, features, sparse, mask_dense=None, image_to_token=None) -> TokenState:
    """``TwoWayTransformer`` for ``B`` prompts: ``sparse (B, T', C)`` from the prompt
    encoder; ``mask_dense`` ``(1 or B, C, h, w)`` embedding of a prior mask or ``None``
    (then layer 0 reuses the image's projections in ``state``). ``image_to_token``: the
    image-to-token attention, :func:`_image_to_token` unless an exporter passes the same
    maths in another layout (:mod:`terramask.models.onnx.staged_graphs`)."""
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

    image_to_token = _image_to_token if image_to_token is None else image_to_token
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
            attn_out = image_to_token(layer.cross_attn_image_to_token, q, queries, qh=q0)
        else:
            attn_out = image_to_token(layer.cross_attn_image_to_token, q, queries, xq=kp)
        keys = layer.norm4(keys + attn_out)

    q = queries + query_pe
    queries = tr.norm_final_attn(queries + _token_to_image(tr.final_attn_token_to_image, q, xk=keys + pe, xv=keys))
    return TokenState(queries=queries, keys=keys, grid=state.grid)


def iou_scores(sam, ts: TokenState):
    """Predicted IoU ``(B, M)`` of every mask token (index 0 = single-mask output)."""
    return sam.mask_decoder.iou_prediction_head(ts.queries[:, 0, :])


def _upscaled(dec, keys):
    """``output_upscaling`` (two stride-2 2x2 transposed convs) in channels-last *block
    order*: ``keys (U, N, C)`` -> ``(U, 16*N, C/8)``, where pixel ``(4y + 2a + c, 4x + 2b + d)``
    of the upscaled grid is row ``((y*w + x)*4 + a*2 + b)*4 + c*2 + d``. Each transposed
    conv is a per-pixel linear map, so it runs as one matrix product; the layer norm
    (over channels) and the second conv act per pixel, so the pixel order is free until
    :func:`_unblock`."""
    torch = torch_module()
    F = torch.nn.functional
    conv1, ln, act1, conv2, act2 = dec.output_upscaling
    u, n, c = keys.shape
    c1, c2 = conv1.out_channels, conv2.out_channels
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(conv1.in_channels, 4 * c1)  # (C_in, 2*2*O)
    y = torch.addmm(conv1.bias.repeat(4), keys.reshape(u * n, c), w1).reshape(-1, c1)
    y = act1(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    return act2(torch.addmm(conv2.bias.repeat(4), y, w2)).reshape(u, n * 16, c2)


def _unblock(blocked, grid: tuple[int, int]):
    """``(..., 16*h*w)`` logits in :func:`_upscaled` block order -> ``(..., 4h, 4w)`` row-major."""
    h, w = grid
    lead = blocked.shape[:-1]
    x = blocked.reshape(*lead, h, w, 2, 2, 2, 2)  # y, x, a, b, c, d
    nd = len(lead)
    order = (*range(nd), nd, nd + 2, nd + 4, nd + 1, nd + 3, nd + 5)
    return x.permute(*order).reshape(*lead, 4 * h, 4 * w)


def _hyper(dec, ts: TokenState, rows, tokens):
    """Hypernetwork outputs ``(K, C/8)`` for mask token ``tokens[k]`` (1..M) of prompt ``rows[k]``."""
    torch = torch_module()
    mt = ts.queries[rows, tokens]  # (K, C)
    out = torch.empty((len(rows), dec.output_hypernetworks_mlps[0].layers[-1].out_features), dtype=mt.dtype, device=mt.device)
    for t in torch.unique(tokens).tolist():
        sel = tokens == t
        out[sel] = dec.output_hypernetworks_mlps[t - 1](mt[sel])
    return out


def mask_logits(sam, ts: TokenState, tokens: range):
    """Low-res logits ``(B, K, 4h, 4w)`` of mask tokens ``tokens`` (within ``1..M``) of every prompt."""
    torch = torch_module()
    dec = sam.mask_decoder
    hyper = torch.stack([dec.output_hypernetworks_mlps[t - 1](ts.queries[:, t, :]) for t in tokens], dim=1)
    up = _upscaled(dec, ts.keys)  # (B, 16N, C/8)
    return _unblock(hyper @ up.transpose(1, 2), ts.grid)


def selected_mask_logits(sam, ts: TokenState, rows, tokens):
    """Low-res logits ``(K, 4h, 4w)`` of mask token ``tokens[k]`` (1..M) of prompt
    ``rows[k]`` (both ``(K,)`` int64 tensors, any order): the image tokens of each
    distinct prompt are upscaled once, and only the asked masks are formed."""
    torch = torch_module()
    dec = sam.mask_decoder
    h, w = ts.grid
    if rows.numel() == 0:
        return ts.keys.new_zeros((0, 4 * h, 4 * w))
    uniq, inverse = torch.unique(rows, return_inverse=True)
    up = _upscaled(dec, ts.keys[uniq] if len(uniq) < ts.keys.shape[0] else ts.keys)  # (U, 16N, C/8)
    hyper = _hyper(dec, ts, rows, tokens)
    # per distinct prompt, the hypernetwork rows of its selected tokens, packed for one bmm
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(uniq))
    slot = torch.arange(len(rows), device=up.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    packed = up.new_zeros((len(uniq), int(counts.max()), up.shape[-1]))
    packed[inverse[order], slot] = hyper[order]
    logits = torch.bmm(packed, up.transpose(1, 2))  # (U, width, 16N) in block order
    out = torch.empty((len(rows), up.shape[1]), dtype=up.dtype, device=up.device)
    out[order] = logits[inverse[order], slot]
    return _unblock(out, ts.grid)


def decode(sam, state: ImageState, features, sparse, mask_dense=None, multimask: bool = True):
    """Low-res mask logits and predicted IoU for ``B`` prompts (the official
    ``MaskDecoder.forward``).

    ``sparse (B, T', C)`` from the prompt encoder; ``mask_dense`` ``(1 or B, C, h, w)``
    embedding of a prior mask or ``None``. Returns ``low_res (B, K, 4h, 4w)`` and
    ``iou (B, K)``, ``K = 3`` for multimask else 1, in SAM's token order.
    """
    ts = transformer(sam, state, features, sparse, mask_dense)
    m = sam.mask_decoder.num_mask_tokens
    tokens = range(2, m + 1) if multimask else range(1, 2)
    iou = iou_scores(sam, ts)[:, tokens.start - 1 : tokens.stop - 1]
    return mask_logits(sam, ts, tokens), iou
