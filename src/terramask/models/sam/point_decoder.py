"""A cheaper, mathematically equivalent SAM mask decoder for single-image point batches.

Automatic mask generation asks the SAM mask decoder about hundreds of single-point
prompts on ONE image embedding. The official ``MaskDecoder`` repeats the image
embedding per prompt and projects all ``h*w`` image tokens through the attention's
``k/v/q/out`` linear layers for every prompt (about 3.6 GFLOP per prompt, most of it on
the 4,096 image tokens). Two exact rewrites make it several times cheaper:

1. Work that does not depend on the prompt is done once per image: the first block's
   image-side projections (``k``/``v`` of token-to-image, ``q`` of image-to-token) act
   on ``image_embedding + no_mask_embed``, the same for every prompt without a prior mask.
2. Attention between a handful of tokens (7 for one point) and thousands of image tokens
   is re-associated so the image tokens are never projected: for token-to-image
   attention ``softmax(q Wk X^T) X Wv^T = softmax((q Wk) X^T) (P X) Wv^T`` (a bias on the
   keys is constant along the softmax axis and drops out; softmax rows sum to one, so
   the value bias is added once), and for image-to-token attention the query and output
   projections are folded into the token side (``X Wq^T k^T`` and ``P (v Wo^T)``).
   Per prompt this replaces ``h*w x C x C/2`` products by ``h*w x C x heads*tokens``.

A third, decision-preserving saving is left to the caller: the IoU prediction depends
only on the transformer output, so :meth:`FoldedPointDecoder.run` returns the predicted
IoU first and :meth:`FoldedPointDecoder.masks` upsamples and decodes only the prompts
(and mask tokens) the caller still wants.

Results equal the official decoder up to float32 rounding (tested against
``segment_anything``'s ``MaskDecoder`` in ``tests/pipelines/test_amg_decoder.py``).
Works with every decoder of the SAM v1 family (SAM ViT-B/L/H, MobileSAM): it reads the
official modules, it does not copy weights.

Frames: point coordinates are in the *model input* frame (longest side 1024, the frame
``ResizeLongestSide.apply_coords`` produces); logits are the decoder's low-resolution
``(4*h, 4*w)`` = ``(256, 256)`` grid covering the padded 1024 x 1024 model input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class PreparedImage:
    """Per-image tensors shared by every prompt (all float32, on the model's device).

    ``src`` ``(N, C)``: image tokens (embedding + no-mask dense embedding), ``N = h*w``;
    ``pe`` ``(N, C)`` dense positional encoding; ``k0``/``v0`` ``(N, D)`` the first block's
    token-to-image key/value projections; ``q0`` ``(N, D)`` its image-to-token query
    projection; ``grid`` ``(h, w)`` of the embedding.
    """

    src: Any
    pe: Any
    k0: Any
    v0: Any
    q0: Any
    grid: tuple[int, int]


@dataclass
class TokenState:
    """Transformer output for a batch of ``B`` prompts.

    ``iou`` ``(B, M)`` predicted IoU of all ``M`` mask tokens (M = 4 for SAM, index 0 is
    the single-mask output); ``mask_tokens`` ``(B, M, C)``; ``keys`` ``(B, N, C)`` the
    updated image tokens the masks are decoded from.
    """

    iou: Any
    mask_tokens: Any
    keys: Any
    grid: tuple[int, int] = (64, 64)


class FoldedPointDecoder:
    """Re-associated SAM mask decoder over the official ``prompt_encoder``/``mask_decoder``.

    ``prepare(image_embedding (1, C, h, w))`` once per image, then for each batch
    ``run(prepared, coords (B, P, 2) model frame, labels (B, P))`` -> :class:`TokenState`
    and ``masks(state, rows, tokens)`` -> low-res logits ``(len(rows), 256, 256)``.
    """

    def __init__(self, prompt_encoder: Any, mask_decoder: Any) -> None:
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.transformer = mask_decoder.transformer

    # -- per image -------------------------------------------------------------
    def prepare(self, image_embedding: Any) -> PreparedImage:
        """Shared tensors for one image embedding ``(1, C, h, w)``."""
        import torch

        with torch.inference_mode():
            _, c, h, w = image_embedding.shape
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            src = (image_embedding + dense)[0].flatten(1).transpose(0, 1).contiguous()
            pe = self.prompt_encoder.get_dense_pe().to(src.device)[0].flatten(1).transpose(0, 1).contiguous()
            first = self.transformer.layers[0]
            kin = src + pe
            k0 = first.cross_attn_token_to_image.k_proj(kin)
            v0 = first.cross_attn_token_to_image.v_proj(src)
            q0 = first.cross_attn_image_to_token.q_proj(kin)
        return PreparedImage(src=src, pe=pe, k0=k0, v0=v0, q0=q0, grid=(int(h), int(w)))

    # -- per batch of prompts ---------------------------------------------------
    def run(self, prep: PreparedImage, coords: Any, labels: Any) -> TokenState:
        """Transformer and IoU head for ``B`` prompts of ``P`` points each.

        ``coords`` ``(B, P, 2)`` float in the model input frame; ``labels`` ``(B, P)`` int
        (1 object, 0 background). Returns the predicted IoU of every mask token and what
        :meth:`masks` needs.
        """
        import torch

        dec = self.mask_decoder
        with torch.inference_mode():
            coords = torch.as_tensor(coords, dtype=torch.float32, device=prep.src.device)
            labels = torch.as_tensor(labels, dtype=torch.int64, device=prep.src.device)
            sparse, _ = self.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            b = sparse.shape[0]
            out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
            tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)

            queries, keys = tokens, None
            for i, layer in enumerate(self.transformer.layers):
                queries, keys = self._block(layer, prep, queries, keys, tokens)
            attn_out = _token_to_image(self.transformer.final_attn_token_to_image, queries + tokens, keys, prep.pe)
            queries = self.transformer.norm_final_attn(queries + attn_out)

            iou = dec.iou_prediction_head(queries[:, 0, :])
            mask_tokens = queries[:, 1 : 1 + dec.num_mask_tokens, :]
        return TokenState(iou=iou, mask_tokens=mask_tokens, keys=keys, grid=prep.grid)

    def masks(self, state: TokenState, rows: Any, tokens: Any) -> Any:
        """Low-res logits ``(K, 4h, 4w)`` float32 for mask token ``tokens[k]`` of prompt
        ``rows[k]`` (both ``(K,)`` int); upsamples each distinct prompt once."""
        import torch

        dec = self.mask_decoder
        with torch.inference_mode():
            rows = torch.as_tensor(rows, dtype=torch.int64, device=state.keys.device)
            tokens = torch.as_tensor(tokens, dtype=torch.int64, device=state.keys.device)
            if rows.numel() == 0:
                gh, gw = state.grid
                return torch.zeros((0, 4 * gh, 4 * gw), dtype=torch.float32, device=state.keys.device)
            uniq, inverse = torch.unique(rows, return_inverse=True)
            gh, gw = state.grid
            up = self._upscale(state.keys[uniq] if len(uniq) < state.keys.shape[0] else state.keys, gh, gw)
            u, npix, c8 = up.shape
            mt = state.mask_tokens[rows, tokens]  # (K, C)
            hyper = torch.empty((len(rows), c8), dtype=up.dtype, device=up.device)
            for t in torch.unique(tokens).tolist():
                sel = tokens == t
                hyper[sel] = dec.output_hypernetworks_mlps[t](mt[sel])
            # per distinct prompt, the hypernetwork rows of its selected tokens
            order = torch.argsort(inverse, stable=True)
            counts = torch.bincount(inverse, minlength=u)
            width = int(counts.max())
            slot = torch.arange(len(rows), device=up.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
            packed = torch.zeros((u, width, c8), dtype=up.dtype, device=up.device)
            packed[inverse[order], slot] = hyper[order]
            logits = torch.bmm(packed, up.transpose(1, 2))  # (U, width, npix) in block order
            out = torch.empty((len(rows), npix), dtype=up.dtype, device=up.device)
            out[order] = logits[inverse[order], slot]
            return _unblock(out, gh, gw)

    def _upscale(self, keys: Any, gh: int, gw: int) -> Any:
        """``output_upscaling`` in channels-last block order: ``(U, N, C)`` ->
        ``(U, 16*N, C/8)`` where pixel ``(4i + 2a + c, 4j + 2b + d)`` of the upscaled
        grid is at row ``((i*gw + j)*4 + a*2 + b)*4 + c*2 + d``. Two transposed 2x2
        stride-2 convolutions are per-pixel linear maps, so they run as matrix products."""
        import torch
        import torch.nn.functional as F

        conv1, norm, act1, conv2, act2 = self.mask_decoder.output_upscaling
        u, n, c = keys.shape
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, -1)  # (Cin, kh*kw*Cout)
        c1 = conv1.weight.shape[1]
        y = torch.addmm(conv1.bias.repeat(4), keys.reshape(u * n, c), w1).reshape(u, n * 4, c1)
        y = F.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps)
        y = act1(y)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, -1)
        c2 = conv2.weight.shape[1]
        y = torch.addmm(conv2.bias.repeat(4), y.reshape(u * n * 4, c1), w2).reshape(u, n * 16, c2)
        return act2(y)
    # -- internals ----------------------------------------------------------------
    def _block(self, layer: Any, prep: PreparedImage, queries: Any, keys: Any, query_pe: Any):
        """One ``TwoWayAttentionBlock``; ``keys=None`` means the shared ``prep.src``."""
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        q = queries + query_pe
        if keys is None:
            attn_out = _token_to_image_shared(layer.cross_attn_token_to_image, q, prep.k0, prep.v0)
        else:
            keys_pe = keys + prep.pe
            attn_out = _token_to_image(layer.cross_attn_token_to_image, q, keys, prep.pe, keys_pe)
        queries = layer.norm2(queries + attn_out)

        queries = layer.norm3(queries + layer.mlp(queries))

        q = queries + query_pe
        if keys is None:
            attn_out = _image_to_token(layer.cross_attn_image_to_token, None, q, queries, shared_q=prep.q0)
            attn_out += prep.src
        else:
            attn_out = _image_to_token(layer.cross_attn_image_to_token, keys_pe, q, queries)
            attn_out += keys
        keys = layer.norm4(attn_out)
        return queries, keys


def _heads(x: Any, num_heads: int) -> Any:
    """``(..., T, D)`` -> ``(..., T, H, D/H)``."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def _token_to_image_shared(attn: Any, q_in: Any, k: Any, v: Any) -> Any:
    """Standard attention of ``(B, T, C)`` tokens on shared projected keys/values ``(N, D)``."""
    import torch

    h = attn.num_heads
    q = _heads(attn.q_proj(q_in), h)  # (B, T, H, d)
    kh = _heads(k, h)  # (N, H, d)
    vh = _heads(v, h)
    d = q.shape[-1]
    scores = torch.einsum("bthd,nhd->bhtn", q, kh) / math.sqrt(d)
    p = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhtn,nhd->bthd", p, vh)
    return attn.out_proj(out.reshape(*out.shape[:2], -1))


def _token_to_image(attn: Any, q_in: Any, keys: Any, pe: Any, keys_pe: Any = None) -> Any:
    """Attention of tokens ``q_in (B, T, C)`` on image tokens (keys ``keys + pe``, values
    ``keys``; ``keys (B, N, C)``, ``pe (N, C)``) without projecting the image tokens (see
    the module docstring). ``keys_pe``: ``keys + pe`` when the caller already has it."""
    import torch

    h = attn.num_heads
    b, t, c = q_in.shape
    q = _heads(attn.q_proj(q_in), h)  # (B, T, H, d)
    d = q.shape[-1]
    wk = attn.k_proj.weight.reshape(h, d, c) / math.sqrt(d)
    a = torch.einsum("bthd,hdc->bhtc", q, wk).reshape(b, h * t, c)
    if keys_pe is not None:
        scores = torch.bmm(a, keys_pe.transpose(1, 2))  # (B, H*T, N)
    else:
        scores = torch.matmul(a, pe.transpose(0, 1))
        scores.baddbmm_(a, keys.transpose(1, 2))
    p = torch.softmax(scores, dim=-1)
    m = torch.bmm(p, keys).reshape(b, h, t, c)  # (B, H, T, C)
    wv = attn.v_proj.weight.reshape(h, d, c)
    out = torch.einsum("bhtc,hdc->bthd", m, wv) + attn.v_proj.bias.reshape(h, d)
    return attn.out_proj(out.reshape(b, t, h * d))


def _image_to_token(attn: Any, q_in: Any, k_in: Any, v_in: Any, shared_q: Any = None) -> Any:
    """Attention of image tokens ``q_in (B, N, C)`` on tokens ``k_in``/``v_in (B, T, C)``
    with the query and output projections folded into the token side. ``shared_q``
    ``(N, D)``: already projected queries shared by the batch (then ``q_in`` is unused)."""
    import torch

    h = attn.num_heads
    b, t, c = k_in.shape
    k = _heads(attn.k_proj(k_in), h)  # (B, T, H, d)
    v = _heads(attn.v_proj(v_in), h)
    d = k.shape[-1]
    if shared_q is not None:
        qh = _heads(shared_q, h)  # (N, H, d)
        scores = torch.einsum("bthd,nhd->bhtn", k, qh)  # (B, H, T, N)
    else:
        wq = attn.q_proj.weight.reshape(h, d, c)
        cmat = torch.einsum("bthd,hdc->bhtc", k, wq).reshape(b, h * t, c)
        const = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.reshape(h, d)).reshape(b, h * t, 1)
        scores = torch.baddbmm(const, cmat, q_in.transpose(1, 2)).reshape(b, h, t, -1)
    # softmax over the T tokens, with the long image axis innermost (vectorises well)
    p = torch.softmax(scores / math.sqrt(d), dim=2)
    wo = attn.out_proj.weight.reshape(c, h, d)
    dmat = torch.einsum("bthd,chd->bhtc", v, wo).reshape(b, h * t, c)
    n = p.shape[-1]
    return torch.baddbmm(attn.out_proj.bias.reshape(1, 1, c), p.reshape(b, h * t, n).transpose(1, 2), dmat)

def _unblock(blocked: Any, gh: int, gw: int) -> Any:
    """``(K, 16*gh*gw)`` logits in :meth:`FoldedPointDecoder._upscale` block order ->
    ``(K, 4*gh, 4*gw)`` row-major."""
    k = blocked.shape[0]
    x = blocked.reshape(k, gh, gw, 2, 2, 2, 2)  # i, j, a, b, c, d
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(k, 4 * gh, 4 * gw)


class SamPointScorer:
    """Two-stage single-point decoding on a :class:`~terramask.models.sam.backend.SamBackend`
    (or any object with an official SAM v1 ``model`` and a ``device``), for automatic
    mask generation.

    :meth:`decode` runs the folded transformer on chunks of ``chunk`` prompts, asks
    ``select(iou)`` which of the 3 multimask outputs to keep, and decodes low-res logits
    only for those. Coordinates are image pixels of the embedded image (``x, y``).
    """

    def __init__(self, backend: Any, chunk: int = 4) -> None:
        model = backend.model
        self.backend = backend
        self.device = getattr(backend, "device", "cpu")
        self.decoder = FoldedPointDecoder(model.prompt_encoder, model.mask_decoder)
        self.chunk = max(1, int(chunk))
        self.upscaler = SamUpscaler(int(getattr(backend, "img_size", 1024)))
        self._prep: PreparedImage | None = None
        self._embedding: Any = None

    def _prepare(self, embedding: Any) -> PreparedImage:
        import numpy as np
        import torch

        if self._embedding is not embedding or self._prep is None:
            feats = np.array(embedding.features, dtype=np.float32, copy=True)
            self._prep = self.decoder.prepare(torch.as_tensor(feats, device=self.device))
            self._embedding = embedding
        return self._prep

    def upscale(self, embedding: Any, low_res: Any, window: tuple[int, int, int, int] | None = None) -> Any:
        """Low-res logits ``(N, 256, 256)`` -> image logits inside ``window`` (see :class:`SamUpscaler`)."""
        return self.upscaler.upscale(embedding, low_res, window)

    def decode(self, embedding: Any, coords: Any, select: Any):
        """Decode single-point prompts ``coords (B, 2)`` float64 image pixels.

        ``select(iou (b, 3) float32) -> (b, 3) bool`` chooses the outputs to decode.
        Returns ``iou (B, 3)`` float32 (SAM's multimask outputs, in SAM's order),
        ``rows (K,)``, ``ks (K,)`` (prompt index, output index 0..2, prompt-major) and
        ``low_res (K, 256, 256)`` float32 logits of the selected outputs.
        """
        import numpy as np
        import torch

        prep = self._prepare(embedding)
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        (rows_img, cols_img), (rows_in, cols_in) = embedding.image_size, embedding.input_size
        model_xy = coords.copy()
        model_xy[:, 0] *= cols_in / cols_img
        model_xy[:, 1] *= rows_in / rows_img
        model_xy = model_xy.astype(np.float32)
        ious, rows_out, ks_out, lows = [], [], [], []
        for start in range(0, len(coords), self.chunk):
            part = torch.as_tensor(model_xy[start : start + self.chunk, None, :], device=self.device)
            labels = torch.ones(part.shape[:2], dtype=torch.int64, device=self.device)
            state = self.decoder.run(prep, part, labels)
            iou = state.iou[:, 1:].float().cpu().numpy()
            keep = np.asarray(select(iou), dtype=bool).reshape(iou.shape)
            r, k = np.nonzero(keep)
            ious.append(iou)
            if r.size:
                low = self.decoder.masks(state, torch.as_tensor(r), torch.as_tensor(k + 1))
                lows.append(low.float().cpu().numpy())
                rows_out.append(r + start)
                ks_out.append(k)
            del state
        low_side = 4 * prep.grid[0]
        iou = np.concatenate(ious) if ious else np.zeros((0, 3), np.float32)
        if not lows:
            return iou, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, low_side, 4 * prep.grid[1]), np.float32)
        return iou, np.concatenate(rows_out), np.concatenate(ks_out), np.concatenate(lows)


def point_scorer_for(backend: Any, chunk: int = 4) -> SamPointScorer | None:
    """A :class:`SamPointScorer` when ``backend`` wraps an official SAM v1 model (SAM,
    MobileSAM), else ``None`` (the caller then uses the backend's ``decode_points``)."""
    model = getattr(backend, "model", None)
    dec = getattr(model, "mask_decoder", None)
    enc = getattr(model, "prompt_encoder", None)
    if dec is None or enc is None:
        return None
    needed = ("transformer", "iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps", "iou_prediction_head")
    if not all(hasattr(dec, n) for n in needed) or not hasattr(dec.transformer, "final_attn_token_to_image"):
        return None
    if not hasattr(enc, "no_mask_embed") or len(dec.output_upscaling) != 5:
        return None
    return SamPointScorer(backend, chunk=chunk)


class SamUpscaler:
    """SAM's ``postprocess_masks`` (bilinear to the model size, crop to ``input_size``,
    bilinear to the image size) evaluated only for a window.

    Both resizes are linear and separable, so per axis they compose into one map in which
    every output pixel reads at most 4 consecutive low-res samples: ``out = sum_t
    w[t] * low[idx[t]]`` along columns, then along rows. The cost is a few operations
    per output pixel (no ``model_size``-sized intermediate) and equals the two-step
    resize within float32 rounding. Windows covering most of the image use the
    whole-image two-step kernel instead (faster there). Runs in torch (its thread
    settings apply).
    """

    #: Windows larger than this fraction of the image use the whole-image kernel.
    full_fraction = 0.3

    def __init__(self, model_size: int = 1024) -> None:
        self.model_size = int(model_size)
        self._cache: dict = {}

    def _full(self, low_res: Any, embedding: Any) -> Any:
        """The whole image, exactly as ``Sam.postprocess_masks`` computes it."""
        import torch
        import torch.nn.functional as F

        (rows, cols), (rows_in, cols_in) = embedding.image_size, embedding.input_size
        with torch.inference_mode():
            x = torch.from_numpy(low_res)[:, None]
            x = F.interpolate(x, (self.model_size, self.model_size), mode="bilinear", align_corners=False)
            x = x[..., :rows_in, :cols_in]
            if (rows_in, cols_in) != (rows, cols):
                x = F.interpolate(x, (rows, cols), mode="bilinear", align_corners=False)
        return x[:, 0].numpy()

    def _axis(self, low: int, resized: int, image: int):
        """``(idx (image, T) int64, w (image, T) float32)`` taps of the composed map."""
        import numpy as np

        from terramask.models.torch_utils import bilinear_taps

        key = (low, resized, image)
        if key not in self._cache:
            i1, w1 = bilinear_taps(low, self.model_size, 0, resized)  # stage 1, kept rows only
            a1 = np.zeros((resized, low), np.float64)
            np.add.at(a1, (np.arange(resized)[:, None], i1), w1.astype(np.float64))
            if image == resized:
                m = a1
            else:
                i2, w2 = bilinear_taps(resized, image)
                a2 = np.zeros((image, resized), np.float64)
                np.add.at(a2, (np.arange(image)[:, None], i2), w2.astype(np.float64))
                m = a2 @ a1
            nz = m != 0
            has = nz.any(1)
            first = np.where(has, nz.argmax(1), 0)
            last = np.where(has, low - 1 - nz[:, ::-1].argmax(1), 0)
            taps = int((last - first).max()) + 1
            idx = np.minimum(first[:, None] + np.arange(taps)[None, :], low - 1)
            w = np.take_along_axis(m, idx, axis=1)
            w[first[:, None] + np.arange(taps)[None, :] > low - 1] = 0.0
            self._cache[key] = (idx.astype(np.int64), w.astype(np.float32))
        return self._cache[key]

    def upscale(self, embedding: Any, low_res: Any, window: tuple[int, int, int, int] | None = None) -> Any:
        """``low_res (N, L, L)`` float32 -> ``(N, y1 - y0, x1 - x0)`` float32 logits (numpy)."""
        import numpy as np
        import torch

        low_res = np.asarray(low_res, dtype=np.float32)
        n, lh, lw = low_res.shape
        (rows, cols), (rows_in, cols_in) = embedding.image_size, embedding.input_size
        x0, y0, x1, y1 = window if window is not None else (0, 0, cols, rows)
        if (x1 - x0) * (y1 - y0) > self.full_fraction * rows * cols:
            return self._full(low_res, embedding)[:, y0:y1, x0:x1]
        ir, wr = self._axis(lh, rows_in, rows)
        ic, wc = self._axis(lw, cols_in, cols)
        ir, wr = ir[y0:y1], wr[y0:y1]
        ic, wc = ic[x0:x1], wc[x0:x1]
        a, b = int(ir.min()), int(ir.max()) + 1
        c, d = int(ic.min()), int(ic.max()) + 1
        with torch.inference_mode():
            low = torch.from_numpy(np.ascontiguousarray(low_res[:, a:b, c:d]))
            icol = torch.from_numpy(ic - c)
            wcol = torch.from_numpy(wc)
            tmp = low[:, :, icol[:, 0]] * wcol[:, 0]
            for t in range(1, icol.shape[1]):
                tmp += low[:, :, icol[:, t]] * wcol[:, t]
            irow = torch.from_numpy(ir - a)
            wrow = torch.from_numpy(wr)
            out = tmp[:, irow[:, 0], :] * wrow[:, 0, None]
            for t in range(1, irow.shape[1]):
                out += tmp[:, irow[:, t], :] * wrow[:, t, None]
        return out.numpy()
