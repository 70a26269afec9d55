"""Global attention of SAM's ViT image encoder in chunks of query rows (less memory).

The official ``segment_anything`` ``Attention.forward`` materialises the whole attention
map of a global block: ``(B * heads, N, N)`` float32 for ``N = 64 * 64`` tokens, 805 MB
for ViT-B's 12 heads, and ``add_decomposed_rel_pos`` and the softmax each make another
one, so the encoder's transient peak is about 2.5 GB (ViT-L/H: 16 heads, ~3.2 GB).
:func:`chunked_attention_forward` computes the same thing a few query rows of the token
grid at a time: scores ``(q * scale) k^T`` of the chunk, plus the decomposed relative
position terms (``rel_h``/``rel_w``, computed once for all queries: small), softmax, times
``v``. Every output row depends only on its own query, so the result equals the official
one (same operations in the same order per row; within float rounding of the matrix
products' blocking). The score chunk is at most :data:`CHUNK_BYTES`.

:func:`chunk_global_attention` installs it on the global blocks of an encoder (as an
instance ``forward``: the module, its parameters and state-dict keys are unchanged;
``segment_anything`` itself is not modified); windowed blocks (14 x 14 tokens per window)
keep the official forward. :func:`official_attention` undoes it (e.g. for ONNX export).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator

from terramask.models.torch_utils import torch_module

#: Largest score chunk ``(B * heads, rows * W, N)`` float32, in bytes.
CHUNK_BYTES = 64 * 1024 * 1024

_MARK = "_terramask_chunked"


def chunked_attention_forward(attn: Any, x: Any) -> Any:
    """``segment_anything`` ``Attention.forward`` of ``attn`` on ``x (B, H, W, C)`` ->
    ``(B, H, W, C)``, the attention map built ``rows`` query rows of the grid at a time."""
    torch = torch_module()
    get_rel_pos = _get_rel_pos()
    b, h, w, _ = x.shape
    n = h * w
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, n, -1).unbind(0)  # (BH, N, d) each
    bh, d = q.shape[0], q.shape[-1]
    rel_h = rel_w = None
    if attn.use_rel_pos:
        r_q = q.reshape(bh, h, w, d)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h))  # (BH, H, W, H)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w))  # (BH, H, W, W)
    k_t = k.transpose(-2, -1)
    out = torch.empty_like(q)
    rows = max(1, min(h, CHUNK_BYTES // max(1, bh * w * n * q.element_size())))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        scores = (q[:, r0 * w : r1 * w] * attn.scale) @ k_t  # (BH, (r1-r0)*W, N)
        if rel_h is not None and rel_w is not None:
            grid = scores.view(bh, r1 - r0, w, h, w)
            grid += rel_h[:, r0:r1, :, :, None]
            grid += rel_w[:, r0:r1, :, None, :]
        out[:, r0 * w : r1 * w] = scores.softmax(dim=-1) @ v
        del scores
    y = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(y)


def _get_rel_pos():
    from terramask.core.lazy import require

    return require("segment_anything.modeling.image_encoder", "sam", "segment-anything").get_rel_pos


def _global_attentions(encoder: Any) -> list[Any]:
    """The ``Attention`` modules of ``encoder``'s global blocks (``window_size == 0``);
    empty for encoders that are not a ``segment_anything`` ``ImageEncoderViT``."""
    found = []
    for block in getattr(encoder, "blocks", ()):
        attn = getattr(block, "attn", None)
        if getattr(block, "window_size", None) == 0 and hasattr(attn, "qkv") and hasattr(attn, "proj"):
            found.append(attn)
    return found


def chunk_global_attention(encoder: Any) -> int:
    """Make ``encoder``'s global-attention blocks use :func:`chunked_attention_forward`;
    returns how many blocks were changed (0 for other encoders, e.g. TinyViT)."""
    changed = 0
    for attn in _global_attentions(encoder):
        if not getattr(attn, _MARK, False):
            attn.forward = partial(chunked_attention_forward, attn)
            setattr(attn, _MARK, True)
            changed += 1
    return changed


@contextlib.contextmanager
def official_attention(encoder: Any) -> Iterator[None]:
    """Within the block, ``encoder``'s global blocks run the official forward again."""
    undone = []
    for attn in _global_attentions(encoder):
        if getattr(attn, _MARK, False):
            del attn.forward
            setattr(attn, _MARK, False)
            undone.append(attn)
    try:
        yield
    finally:
        for attn in undone:
            attn.forward = partial(chunked_attention_forward, attn)
            setattr(attn, _MARK, True)
