"""Losses (torch): Dice + cross-entropy, per data kind, deep supervision; 2-D or 3-D.

``L = L_fl + l1 * L_cpl + l2 * L_pl`` (StMt's organ student; l1 = 1.0, l2 = 0.5 in the
paper), each term Dice + CE over the samples of that kind in the batch; kinds absent from a
batch add 0. Mean teacher (tumor): ``L = L_tl + l * L_cpl`` with the teacher's corrected
prediction. Logits are ``(B, C, *spatial)``, targets ``(B, *spatial)`` class indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from flarecli.core.labels import KINDS


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5
                   ) -> torch.Tensor:
    """1 - mean foreground soft Dice, classes pooled over the batch (nnU-Net 'batch dice').

    logits (B, C, *spatial), target (B, *spatial) int64 in [0, C).
    """
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    target = target.long()
    # tp = sum of each voxel's probability of its own class, per class; 2 tp + fp + fn is
    # the predicted plus the true volume. No one-hot tensor: it cost a third of a CPU step.
    own = probs.gather(1, target[:, None]).reshape(-1)
    tp = torch.zeros(n_classes, dtype=probs.dtype, device=probs.device).index_add_(
        0, target.reshape(-1), own)
    volume = probs.sum((0, *range(2, logits.ndim))) + torch.bincount(
        target.reshape(-1), minlength=n_classes)[:n_classes].to(probs.dtype)
    dice = (2 * tp + smooth) / (volume + smooth)
    return 1 - dice[1:].mean()


def balanced_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy class weights ``count^-1/2`` over the classes present in ``target``
    (0 for absent ones), scaled so that the weighted voxel mean keeps the plain mean's scale.

    Measured (organ model, 32x32x48, 300 steps, 36 fully labelled synthetic cases): the
    adrenals (about 17 voxels each at that size) and the esophagus stay at Dice 0 with plain
    cross-entropy, and reach 0.27 / 0.09 / 0.54 with these weights (mean 0.46 -> 0.63).
    """
    counts = torch.bincount(target.reshape(-1), minlength=n_classes)[:n_classes].float()
    weights = torch.where(counts > 0, counts.clamp(min=1).rsqrt(), torch.zeros_like(counts))
    return weights * counts.sum() / (weights * counts).sum()


def dice_ce(logits: torch.Tensor, target: torch.Tensor, balanced: bool = False
            ) -> torch.Tensor:
    """Soft Dice + cross-entropy; ``balanced`` weights the cross-entropy per class."""
    weight = balanced_weights(target, logits.shape[1]) if balanced else None
    return soft_dice_loss(logits, target) + F.cross_entropy(logits.float(), target.long(),
                                                            weight=weight)


def deep_supervised(outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                    balanced: bool = False) -> torch.Tensor:
    """Dice + CE over one output or a deep-supervision list (weights 1, 1/2, 1/4 ...,
    normalised; coarse targets by nearest down-sampling)."""
    if isinstance(outputs, torch.Tensor):
        return dice_ce(outputs, target, balanced)
    weights = [0.5**i for i in range(len(outputs))]
    total = 0.0
    for w, out in zip(weights, outputs, strict=True):
        t = target
        if out.shape[2:] != target.shape[1:]:
            t = F.interpolate(target[:, None].float(), size=out.shape[2:],
                              mode="nearest-exact")[:, 0].long()
        total = total + w * dice_ce(out, t, balanced)
    return total / sum(weights)


def slice_outputs(outputs, index: torch.Tensor):
    if isinstance(outputs, torch.Tensor):
        return outputs[index]
    return [o[index] for o in outputs]


def kind_losses(outputs, target: torch.Tensor, kinds: Sequence[str], balanced: bool = False
                ) -> dict[str, torch.Tensor]:
    """Dice + CE separately for the samples of each kind present in the batch."""
    out = {}
    for kind in sorted(set(kinds), key=lambda k: (KINDS.index(k) if k in KINDS else 99, k)):
        index = torch.tensor([i for i, k in enumerate(kinds) if k == kind], dtype=torch.long,
                             device=target.device)
        if index.numel():
            out[kind] = deep_supervised(slice_outputs(outputs, index), target[index], balanced)
    return out


def combine(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum_k weights[k] * losses[k]`` over the kinds present."""
    if not losses:
        raise ValueError("no loss terms")
    return sum(weights[k] * v for k, v in losses.items())  # type: ignore[return-value]


def corrected_pseudo_label(teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean teacher's real-time correction: argmax of the teacher, with every annotated voxel
    (``target`` > 0, class indices (B, *spatial)) forced to its annotated class. The argmax is
    ``max(1).indices`` (the same first-wins ties): torch's CPU ``argmax`` over the class axis
    took 14 ms for a 2-D tumor batch (16 x 3 x 64 x 64, two cores), ``max`` 0.5 ms."""
    pseudo = teacher_logits.max(dim=1).indices
    return torch.where(target > 0, target.to(pseudo.dtype), pseudo)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student, parameter by parameter (buffers are
    copied)."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
