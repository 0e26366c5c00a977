"""Training methods: how one batch becomes a loss, per named strategy of a recipe.

* ``supervised``: Dice + CE of every trained head on every sample;
* ``self_training`` (StMt's student): per head ``sum_k weights[k] * L_k`` over the data kinds
  in the batch (FL, CPL, PL); the sampler puts the kinds in equal proportions;
* ``mean_teacher``: per head ``L_annotation + weight * ramp(t) * L_teacher``, where the EMA
  teacher's prediction is corrected in real time (annotated voxels forced);
* ``staged``: any of the above per step; what differs between steps (data, trained
  parameters, heads, lr) is handled by the training loop.

Outputs and targets are dicts head name -> logits (or a deep-supervision list) and head name
-> class indices.
"""

from __future__ import annotations

import math
from typing import Any

from flarecli.core.recipes import spec as S


def mt_rampup(step: int, total: int, rampup: float) -> float:
    """Sigmoid ramp-up of the mean-teacher weight, ``exp(-5 (1 - t)^2)`` over the first
    ``rampup`` of the steps, then 1 (Tarvainen & Valpola's schedule). A young EMA teacher
    predicts noise (its class heads are new); weighting it fully from the first step teaches
    the student that noise and the two reinforce each other: measured, a warm-started tumor
    model then marked 40,000 voxels per synthetic scan as tumor."""
    if rampup <= 0:
        return 1.0
    t = min(1.0, step / max(1.0, rampup * total))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def ema_decay_at(step: int, decay: float) -> float:
    """The teacher follows the student closely at first: 1 - 1/(t + 1) until it reaches
    ``decay`` (Tarvainen & Valpola), else a short run exports a teacher that still remembers
    its first, untrained steps."""
    return min(decay, 1.0 - 1.0 / (step + 1))


def _full(output):
    return output[0] if isinstance(output, list) else output


def batch_loss(method: Any, outputs: dict[str, Any], targets: dict[str, Any],
               kinds: list[str], balanced: bool, *, teacher_outputs: dict[str, Any] | None = None,
               step: int = 0, total: int = 1):
    """(loss, {term name: value}) of one batch. Term names carry the head when there are
    several (``organs/FL``)."""
    from flarecli.core.training import losses as L

    several = len(targets) > 1
    terms: dict[str, Any] = {}
    total_loss = 0.0
    for head, target in targets.items():
        out = outputs[head]
        prefix = f"{head}/" if several else ""
        if isinstance(method, S.SelfTraining):
            parts = L.kind_losses(out, target, kinds, balanced)
            missing = [k for k in parts if k not in method.weights]
            if missing:
                raise ValueError(f"no self-training weight for kind '{missing[0]}'")
            loss = L.combine(parts, method.weights)
        elif isinstance(method, S.MeanTeacher):
            assert teacher_outputs is not None
            pseudo = L.corrected_pseudo_label(_full(teacher_outputs[head]), target)
            parts = {"TL": L.deep_supervised(out, target, balanced),
                     "MT": L.deep_supervised(out, pseudo, balanced)}
            loss = parts["TL"] + method.weight * mt_rampup(step, total, method.rampup) * \
                parts["MT"]
        else:
            parts = {}
            loss = L.deep_supervised(out, target, balanced)
        terms.update({prefix + k: v for k, v in parts.items()})
        if several:
            terms[head] = loss
        total_loss = total_loss + loss
    return total_loss, terms
