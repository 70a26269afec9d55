"""SAM's training loss on low-resolution mask logits (Kirillov et al. 2023, §3 and appendix A):
``20 * focal + 1 * dice`` between mask logits and the label, plus the mean squared error
between the IoU head's prediction and the IoU the mask actually reached.

Every function takes ``logits (K, h, w)`` float, ``target (h, w)`` float 0/1 and
``valid (h, w)`` bool (pixels that count) and returns ``(K,)`` per-mask values, so a
multimask prompt can keep the candidate with the smallest loss.
"""

from __future__ import annotations

from typing import Any

from terramask.models.torch_utils import torch_module

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss(logits: Any, target: Any, valid: Any) -> Any:
    """Sigmoid focal loss (alpha 0.25, gamma 2) averaged over valid pixels -> ``(K,)``."""
    torch = torch_module()
    F = torch.nn.functional
    t = target.expand_as(logits)
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    alpha_t = FOCAL_ALPHA * t + (1 - FOCAL_ALPHA) * (1 - t)
    loss = alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA
    w = valid.to(logits.dtype)
    return (loss * w).sum(dim=(-2, -1)) / w.sum().clamp(min=1.0)


def dice_loss(logits: Any, target: Any, valid: Any) -> Any:
    """``1 - (2 |P∩T| + 1) / (|P| + |T| + 1)`` on sigmoid probabilities over valid pixels -> ``(K,)``."""
    torch = torch_module()
    w = valid.to(logits.dtype)
    prob = torch.sigmoid(logits) * w
    t = target * w
    inter = (prob * t).sum(dim=(-2, -1))
    return 1 - (2 * inter + 1) / (prob.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1)) + 1)


def mask_iou(logits: Any, target: Any, valid: Any) -> Any:
    """IoU of the thresholded masks (logits > 0) with the target over valid pixels -> ``(K,)`` (no gradient)."""
    torch = torch_module()
    with torch.no_grad():
        pred = (logits > 0) & valid
        t = (target > 0.5) & valid
        inter = (pred & t).sum(dim=(-2, -1)).float()
        union = (pred | t).sum(dim=(-2, -1)).float()
        return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(inter))


def sam_loss(logits: Any, iou_pred: Any, target: Any, valid: Any, multimask: bool) -> tuple[Any, Any, Any, Any]:
    """``(loss, focal, dice, iou_mse)`` scalars for one prompt.

    ``logits (K, h, w)`` and ``iou_pred (K,)``: every candidate; with ``multimask`` the
    mask loss is that of the candidate with the smallest focal+dice (SAM's rule for
    ambiguous prompts: only that one gets the mask gradient), the IoU head is trained
    on every candidate; otherwise ``K`` is 1.
    """
    focal = focal_loss(logits, target, valid)
    dice = dice_loss(logits, target, valid)
    per_mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice
    best = int(per_mask.argmin()) if multimask else 0
    iou_mse = ((iou_pred - mask_iou(logits, target, valid)) ** 2).mean()
    loss = per_mask[best] + IOU_WEIGHT * iou_mse
    return loss, focal[best], dice[best], iou_mse
