"""The learning-rate schedule of a phase: linear warm-up, then poly, cosine, step, constant
or reduce-on-plateau (all fields of the recipe's ``optimizer``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from flarecli.core.recipes import spec as S


def lr_factor(opt: S.Optimizer, step: int, total: int, iterations: int,
              plateau_scale: float = 1.0) -> float:
    warm = opt.warmup_epochs * iterations
    if step < warm:
        return (step + 1) / warm
    t = min((step - warm) / max(1, total - warm), 1.0)
    if opt.schedule == "poly":
        return (1 - t) ** opt.poly_power
    if opt.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if opt.schedule == "step":
        return opt.step_factor ** ((step // iterations) // opt.step_epochs)
    if opt.schedule == "plateau":
        return plateau_scale
    return 1.0


@dataclass
class Plateau:
    """Reduce-on-plateau bookkeeping (schedule 'plateau', nnU-Net v1's ReduceLROnPlateau): the
    factor on the learning rate, the best monitored value, and the epochs since it improved."""

    scale: float = 1.0
    best: float = math.inf
    bad: int = 0

    def update(self, monitored: float, opt: S.Optimizer) -> None:
        """After an epoch: a value below the best by 1e-3 is progress; more than
        ``opt.plateau_patience`` epochs without it multiply the rate by ``plateau_factor``."""
        if monitored < self.best - 1e-3:
            self.best, self.bad = monitored, 0
        else:
            self.bad += 1
            if self.bad > opt.plateau_patience:
                self.scale, self.bad = self.scale * opt.plateau_factor, 0


def scheduler(optimizer, opt: S.Optimizer, total: int, iterations: int,
              plateau_scale: Callable[[], float]):
    """The torch scheduler of a phase of ``total`` steps (``iterations`` per epoch):
    :func:`lr_factor` at every step, the plateau factor read when it is needed (a resumed
    run replaces the Plateau the scheduler was made with)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(opt, s, total, iterations, plateau_scale()))
