"""Per-image features of the weight-free ``classic`` backend (its "embedding").

What every classic prompt and the automatic generator reuse for one image: the RGB
pixels, a float CIE-Lab version (perceptual colour distances), a smoothed colour
gradient magnitude (edges for watershed markers and boundary scores) and the valid
(not nodata) mask. All arrays are on the image grid given to ``set_image``
(``(rows, cols)``, ``x = col``, ``y = row``).

Also holds the low-resolution logit layout shared with SAM: a ``256 x 256`` grid on
which the image's longest side spans 256 cells, the image anchored top-left and the
rest padded (bottom/right), so ``low_res_logits`` of one prediction can be passed back
as ``Prompts.mask_logits``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terramask.core.lazy import require

LOW_RES = 256
#: Logit value of padding cells and the clip range of low-res logits.
LOGIT_CLIP = 20.0
#: Logit units per low-res pixel of signed distance to the mask boundary.
LOGIT_GAIN = 2.0


def _cv2():
    return require("cv2", "classic", "opencv-python-headless")


@dataclass(frozen=True, eq=False)
class ClassicFeatures:
    """Reusable per-image arrays.

    - ``rgb``: ``(H, W, 3)`` uint8;
    - ``lab``: ``(H, W, 3)`` float32 CIE-Lab (L in [0, 100], a/b roughly [-128, 127]);
    - ``grad``: ``(H, W)`` float32 colour gradient magnitude of the Gaussian-smoothed
      Lab image (Lab units per pixel);
    - ``valid``: ``(H, W)`` bool, False on nodata.
    """

    rgb: np.ndarray
    lab: np.ndarray
    grad: np.ndarray
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rgb.shape[0]), int(self.rgb.shape[1]))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> float32 CIE-Lab (D65), same shape."""
    cv2 = _cv2()
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


def colour_gradient(lab: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``(H, W)`` float32 magnitude of the Lab colour gradient after Gaussian smoothing.

    Sobel derivatives per channel (divided by 8 to give Lab units per pixel), combined
    as the root of the summed squares over channels and both directions.
    """
    cv2 = _cv2()
    smooth = cv2.GaussianBlur(lab, (0, 0), sigma) if sigma > 0 else lab
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) * 0.125
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) * 0.125
    return np.sqrt((gx * gx + gy * gy).sum(axis=2)).astype(np.float32)


def compute_features(rgb: np.ndarray, valid: np.ndarray | None = None) -> ClassicFeatures:
    """Features of an ``(H, W, 3)`` uint8 image (``valid`` defaults to all True).

    Memory: about 19 bytes per pixel (rgb 3, lab 12, grad 4); pipelines hand tiles of a
    few megapixels, not whole large scenes.
    """
    lab = rgb_to_lab(rgb)
    grad = colour_gradient(lab)
    if valid is None:
        valid = np.ones(rgb.shape[:2], dtype=bool)
    return ClassicFeatures(rgb=rgb, lab=lab, grad=grad, valid=np.asarray(valid, dtype=bool))


# -- low-resolution logits (SAM's layout) ---------------------------------------------
def low_res_shape(image_size: tuple[int, int], grid: int = LOW_RES) -> tuple[int, int]:
    """Rows/cols of the ``grid x grid`` low-res map covered by an image of ``image_size``
    (SAM's rule: longest side -> ``grid``, the other scaled and rounded half up)."""
    h, w = image_size
    scale = grid / max(h, w)
    return (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))


def signed_distance(mask: np.ndarray, clip: float | None = None) -> np.ndarray:
    """``(H, W)`` float32 signed Euclidean distance (pixels) to the boundary of a bool mask:
    positive inside, negative outside, ``+-0.5`` at pixels next to the boundary so the
    zero level lies on the pixel edges. Clipped to ``+-clip`` when given."""
    cv2 = _cv2()
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    big = float(clip) if clip is not None else float(sum(m.shape))
    if not m.any():
        return np.full(m.shape, -big, dtype=np.float32)
    if m.all():
        return np.full(m.shape, big, dtype=np.float32)
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    sdt = np.where(m > 0, d_in - 0.5, 0.5 - d_out).astype(np.float32)
    if clip is not None:
        np.clip(sdt, -clip, clip, out=sdt)
    return sdt


def mask_to_low_res_logits(mask: np.ndarray, grid: int = LOW_RES) -> np.ndarray:
    """``(H, W)`` bool mask -> ``(grid, grid)`` float32 logits in SAM's low-res layout.

    The signed distance to the mask boundary (in low-res pixels) times
    :data:`LOGIT_GAIN`, clipped to ``+-LOGIT_CLIP``; padding cells are ``-LOGIT_CLIP``.
    :func:`low_res_logits_to_image` thresholded at 0 gives the mask back (to within about
    one low-res pixel at corners and structures thinner than a low-res pixel).
    """
    cv2 = _cv2()
    h_img, w_img = mask.shape
    h, w = low_res_shape((h_img, w_img), grid)
    scale = grid / max(h_img, w_img)
    clip_px = (LOGIT_CLIP / LOGIT_GAIN + 2) / scale
    # distances only matter within clip_px of the mask: compute them on its bounding box
    # grown by that much (exact there, since the mask lies inside), the rest is -clip
    sdt = np.full((h_img, w_img), -clip_px, dtype=np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        pad = int(np.ceil(clip_px)) + 1
        y0, y1 = max(0, rows[0] - pad), min(h_img, rows[-1] + 1 + pad)
        x0, x1 = max(0, cols[0] - pad), min(w_img, cols[-1] + 1 + pad)
        sdt[y0:y1, x0:x1] = signed_distance(mask[y0:y1, x0:x1], clip=clip_px)
    small = cv2.resize(sdt, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (h_img, w_img) else sdt
    out = np.full((grid, grid), -LOGIT_CLIP, dtype=np.float32)
    out[:h, :w] = np.clip(small * (scale * LOGIT_GAIN), -LOGIT_CLIP, LOGIT_CLIP)
    return out


def low_res_logits_to_image(
    logits: np.ndarray, image_size: tuple[int, int], window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Upscale low-res logits ``(h, w)`` or ``(N, h, w)`` in SAM's layout to the image grid.

    Crops the padding, resizes bilinearly (half-pixel centres) to ``image_size`` and returns
    float32 ``(H, W)`` / ``(N, H, W)``; with ``window = (x0, y0, x1, y1)`` only that part of
    the image grid is returned. Threshold at 0 for masks.
    """
    cv2 = _cv2()
    arr = np.asarray(logits, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    h_img, w_img = image_size
    gh, gw = arr.shape[1:]
    h, w = low_res_shape((h_img, w_img), max(gh, gw))
    out = []
    for a in arr:
        up = cv2.resize(np.ascontiguousarray(a[:h, :w]), (w_img, h_img), interpolation=cv2.INTER_LINEAR)
        if window is not None:
            x0, y0, x1, y1 = window
            up = up[y0:y1, x0:x1]
        out.append(up)
    res = np.stack(out).astype(np.float32, copy=False)
    return res[0] if single else res
