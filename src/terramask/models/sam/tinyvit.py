"""TinyViT image encoder as used by MobileSAM (``vit_t``), written for terramask.

MobileSAM replaces SAM's ViT image encoder by a TinyViT-5M distilled from it; the prompt
encoder and mask decoder are SAM's. No maintained package provides this encoder (timm's
TinyViT differs: other parameter names, a stride-2 last merge and a classification
output), so this module implements the architecture of the reference
``mobile_sam/modeling/tiny_vit_sam.py`` with the same parameter names, so the official
``mobile_sam.pt`` loads with ``strict=True``. Parity with the reference is tested
against the ``mobilesam-mirror`` package (a packaging of the upstream code).

Shapes for the official configuration (image 1024, dims 64/128/160/320, depths
2/2/6/2, heads 2/4/5/10, windows 7/7/14/7):

- stem: two stride-2 3x3 conv+BN (GELU between) -> ``(B, 64, 256, 256)``;
- stage 0: MBConv blocks (1x1 expand x4, depthwise 3x3, 1x1, residual, GELU) then a
  merge (1x1, depthwise 3x3 stride 2, 1x1) -> tokens ``(B, 128*128, 128)``;
- stages 1-3: TinyViT blocks (window attention with a learned bias per relative
  offset, a depthwise 3x3 conv+BN on the token grid, an MLP; windows are zero-padded at
  the bottom/right as upstream), each stage ending with a merge; the *last* merge keeps
  the resolution (stride 1, upstream's rule for output dims 320/448/576), so the grid is
  ``image / 16`` = 64;
- neck: 1x1 conv to 256, LayerNorm2d, 3x3 conv, LayerNorm2d -> ``(B, 256, 64, 64)``,
  the shape of SAM's image embedding.

``norm_head`` and ``head`` (ImageNet classifier) are kept only because the checkpoint
holds them; they are never run. Inference only (no drop-path, no checkpointing).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TinyVitConfig:
    """TinyViT hyper-parameters (defaults: MobileSAM's ``vit_t``)."""

    img_size: int = 1024
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000
    out_chans: int = 256

    @property
    def grid(self) -> int:
        """Side of the output embedding grid (image / 16)."""
        return self.img_size // 16


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm (parameter names ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__(
            OrderedDict(
                c=nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                bn=nn.BatchNorm2d(cout),
            )
        )


class PatchEmbed(nn.Module):
    """Image ``(B, 3, H, W)`` -> ``(B, dim, H/4, W/4)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block on ``(B, C, H, W)``."""

    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Grid ``(B, C, H, W)`` or tokens ``(B, H*W, C)`` -> tokens ``(B, H'*W', out_dim)``."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


def relative_offset_index(window: int) -> torch.Tensor:
    """``(w*w, w*w)`` int64: for tokens ``i, j`` of a window, the index
    ``|dy| * w + |dx|`` of their offset, which is the order in which the reference
    enumerates distinct offsets (first seen from the window's top-left token)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Multi-head attention inside one window with a learned bias per relative offset.

    Tokens ``(B, N, C)`` with ``N = window**2``; the fused ``qkv`` projection is laid out
    per head as ``[q (d), k (d), v (d)]`` with ``d = C / heads``.
    """

    attention_bias_idxs: torch.Tensor  # registered buffer (w*w, w*w) int64

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention + depthwise conv + MLP on tokens ``(B, H*W, C)``."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, mlp_ratio: float, local_conv: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), ws = self.resolution, self.window
        b, n, c = x.shape
        grid = x.view(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:  # zero tokens join the edge windows, as in the reference
            grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        windows = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        out = self.attn(windows)
        out = out.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        if pad_b or pad_r:
            out = out[:, :h, :w]
        return out.reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._window_attention(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    def __init__(self, dim: int, depth: int, expand: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class BasicLayer(nn.Module):
    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of ``(B, C, H, W)`` (SAM's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias[:, None, None]


class TinyViTEncoder(nn.Module):
    """Image ``(B, 3, S, S)`` normalised and padded like SAM's input -> ``(B, 256, S/16, S/16)``."""

    def __init__(self, cfg: TinyVitConfig = TinyVitConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.img_size  # read by segment_anything's Sam.preprocess
        dims, n = cfg.embed_dims, len(cfg.embed_dims)
        self.patch_embed = PatchEmbed(dims[0])
        side = cfg.img_size // 4
        resolutions, strides = [], []
        for i in range(n):
            resolutions.append((side, side))
            stride = 1 if i >= n - 2 else 2  # the last merge keeps the grid
            if i < n - 1:
                strides.append(stride)
                side = side // stride
        layers: list[nn.Module] = []
        for i in range(n):
            down = None
            if i < n - 1:
                down = PatchMerging(resolutions[i], dims[i], dims[i + 1], strides[i])
            if i == 0:
                layers.append(ConvLayer(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, down))
            else:
                blocks = [
                    TinyViTBlock(dims[i], resolutions[i], cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio, cfg.local_conv_size)
                    for _ in range(cfg.depths[i])
                ]
                layers.append(BasicLayer(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.out_grid = resolutions[-1]
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        h, w = self.out_grid
        return self.neck(x.view(b, h, w, c).permute(0, 3, 1, 2))
