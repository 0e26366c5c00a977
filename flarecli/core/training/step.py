"""One training step (forward, loss, backward, optimiser, EMA teacher) and the validation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flarecli.core.errors import ModelError
from flarecli.core.training import data as D
from flarecli.core.training.cache import load_cached
from flarecli.core.training.feed import Feed
from flarecli.core.training.options import Progress
from flarecli.core.training.phases import Phase
from flarecli.core.training.state import RunState


def _as_dict(outputs, heads: tuple[str, ...]) -> dict[str, Any]:
    from flarecli.models import as_heads

    return as_heads(outputs, heads)


def _to_network(images, dims: int):
    """(B, 1, D, H, W) samples -> the network's input: 2-D networks take (B, 1, H, W)."""
    return images[:, :, 0] if dims == 2 else images


def _targets(labels, luts: dict[str, Any], dims: int) -> dict[str, Any]:
    lab = labels[:, 0] if dims == 2 else labels
    return {h: lut[lab] for h, lut in luts.items()}


def train_step(state: RunState, phase: Phase, images, labels, kinds: list[str],
               luts: dict[str, Any], dims: int) -> dict[str, float]:
    import torch

    from flarecli.core.runtime import autocast
    from flarecli.core.training import losses as L
    from flarecli.core.training.methods import batch_loss, ema_decay_at

    stage = state.stage
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    heads = tuple(stage.network.heads)
    x = _to_network(images, dims)
    targets = _targets(labels, {h: luts[h] for h in phase.heads}, dims)
    with autocast(state.device, stage.precision):
        outputs = _as_dict(state.model(x), heads)
        teacher_out = None
        if state.teacher is not None:
            with torch.no_grad():
                teacher_out = _as_dict(state.teacher(x), heads)
        loss, terms = batch_loss(stage.method, outputs, targets, kinds, stage.loss.balanced_ce,
                                 teacher_outputs=teacher_out,
                                 step=state.scheduler.last_epoch,
                                 total=phase.epochs * phase.iterations)
    if not torch.isfinite(loss.detach()):
        raise ModelError(f"the loss is not finite ({float(loss.detach())}) at step "
                         f"{state.scheduler.last_epoch + 1} of phase '{phase.name}'",
                         hint="lower the learning rate; the last good checkpoint is kept")
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    params = [p for p in state.module.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, stage.optimizer.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.teacher is not None:
        L.ema_update(state.teacher, state.module,
                     ema_decay_at(state.scheduler.last_epoch, stage.method.ema_decay))
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def validate(state: RunState, phase: Phase, paths: list[Path], luts: dict[str, Any],
             dims: int) -> tuple[dict[str, float], float, float]:
    """Mean Dice per class (network resolution) of the exported network on held-out cases,
    its mean loss (Dice + CE) and mean soft Dice loss. Classes are keyed by FLARE id (a
    merged class by its head's name)."""
    import torch

    from flarecli.core.runtime import autocast
    from flarecli.core.training import losses as L

    net = state.exported
    net.eval()
    stage = state.stage
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    loss_sum = dice_loss_sum = 0.0
    with torch.no_grad():
        for path in paths:
            image, label = D.make_sample(load_cached(path), 0, stage.geometry, None,
                                         state.device, train=False)
            x = _to_network(image[None], dims)
            with autocast(state.device, stage.precision):
                outputs = _as_dict(net(x), tuple(stage.network.heads))
            for head, target in _targets(label[None], {h: luts[h] for h in phase.heads},
                                         dims).items():
                logits = outputs[head][0] if isinstance(outputs[head], list) else outputs[head]
                loss_sum += float(L.dice_ce(logits.float(), target))
                dice_loss_sum += float(L.soft_dice_loss(logits.float(), target))
                pred = logits.argmax(1)[0]
                classes = stage.network.heads[head]
                for k, entry in enumerate(classes, start=1):
                    key = str(entry) if isinstance(entry, int) else head
                    g, p = target[0] == k, pred == k
                    total = int(g.sum() + p.sum())
                    if total:
                        sums[key] = sums.get(key, 0.0) + 2 * int((g & p).sum()) / total
                        counts[key] = counts.get(key, 0) + 1
    n = max(1, len(paths))
    return {k: sums[k] / counts[k] for k in sums}, loss_sum / n, dice_loss_sum / n


def train_epoch(state: RunState, phase: Phase, batches: list[list[tuple[int, int]]], loader,
                kinds: list[str], feed: Feed, progress: Progress
                ) -> tuple[dict[str, float], float]:
    """The steps of one epoch (``batches``: the sampler's (case, seed) pairs, ``loader``
    their samples). Returns the mean of every loss term and the seconds spent waiting for
    data."""
    import torch

    stage = state.stage
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    wait = 0.0
    t_data = time.perf_counter()
    for step, (batch, items) in enumerate(zip(batches, loader, strict=True)):
        wait += time.perf_counter() - t_data
        if feed.on_device:
            items = [D.make_sample(arr, s, stage.geometry, feed.aug, state.device,
                                   swap_lr=feed.swap, lesions=feed.lesions)
                     for arr, s in items]
        images = torch.stack([x for x, _ in items]).to(state.device, non_blocking=True)
        if feed.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        labels = torch.stack([y for _, y in items]).to(state.device, non_blocking=True)
        batch_kinds = [kinds[i] for i, _ in batch]
        metrics = train_step(state, phase, images, labels, batch_kinds, feed.luts, feed.dims)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        progress.step(state.epoch, step, metrics["loss"])
        t_data = time.perf_counter()
    return {k: sums[k] / counts[k] for k in sums}, wait
