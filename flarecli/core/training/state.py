"""The state of a run and its checkpoint: everything a resumed run needs to continue exactly
as an uninterrupted one (model, EMA teacher, optimiser, LR schedule, AMP scaler, RNG, phase,
epoch), saved atomically after every epoch."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError, ModelError
from flarecli.core.io.files import atomic_path, write_text_atomic
from flarecli.core.recipes import spec as S
from flarecli.core.training.network import trainable_mask
from flarecli.core.training.phases import Phase
from flarecli.core.training.schedule import Plateau, scheduler


@dataclass
class RunState:
    """A run as it trains: the stage, the networks (``model`` is ``module`` wrapped for
    data-parallel training), the optimiser, schedule and scaler of the current phase, and
    where it stands (phases completed, epochs of the current phase, the best score)."""

    stage: S.Stage
    run_dir: Path
    device: Any
    model: Any
    module: Any  # the un-wrapped model (DDP wraps `model`)
    teacher: Any | None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    phase: int = 0  # phases completed
    epoch: int = 0  # epochs completed in the current phase
    best: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    plateau: Plateau = field(default_factory=Plateau)

    @property
    def exported(self):
        return self.teacher if self.teacher is not None and isinstance(
            self.stage.method, S.MeanTeacher) and self.stage.method.export == "teacher" \
            else self.module


def start_phase(state: RunState, phase: Phase, distributed: bool) -> None:
    """Freeze what the phase does not train; a fresh optimiser, schedule and scaler."""
    import torch

    from flarecli.core.runtime import amp_dtype

    mask = trainable_mask(state.module, phase.train)
    for name, p in state.module.named_parameters():
        p.requires_grad_(mask[name])
    params = [p for n, p in state.module.named_parameters() if mask[n]]
    opt = state.stage.optimizer
    if opt.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=phase.lr, momentum=opt.momentum,
                                    nesterov=opt.nesterov, weight_decay=opt.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=opt.weight_decay)
    total = phase.epochs * phase.iterations
    state.optimizer = optimizer
    state.plateau = Plateau()
    state.scheduler = scheduler(optimizer, opt, total, phase.iterations,
                                lambda: state.plateau.scale)
    state.scaler = torch.amp.GradScaler(
        state.device.type, enabled=amp_dtype(state.device, state.stage.precision) ==
        torch.float16)
    state.model = state.module
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        state.model = DistributedDataParallel(
            state.module, device_ids=[state.device.index] if state.device.type == "cuda"
            else None, find_unused_parameters=set(phase.heads) != set(
                state.stage.network.heads))


def save_checkpoint(state: RunState) -> None:
    """``checkpoint_last.pt``, atomically: everything :func:`load_checkpoint` restores."""
    import torch

    from flarecli.core.io.bundle import torch_bytes

    ckpt = {
        "model": state.module.state_dict(),
        "teacher": state.teacher.state_dict() if state.teacher is not None else {},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "phase": state.phase,
        "epoch": state.epoch,
        "best": state.best,
        "plateau": [state.plateau.scale, state.plateau.best, state.plateau.bad],
        "torch_rng": torch.get_rng_state(),
    }
    data = torch_bytes(ckpt)
    with atomic_path(state.run_dir / "checkpoint_last.pt") as tmp:
        tmp.write_bytes(data)


def load_checkpoint(state: RunState, phases: list[Phase], distributed: bool) -> None:
    """Resume exactly: the networks, then (inside an unfinished phase) the phase's fresh
    optimiser, schedule and scaler with their saved states, the plateau bookkeeping and the
    RNG; the metrics lines of epochs after the checkpoint are dropped. ModelError for a
    checkpoint that does not load."""
    import torch

    path = state.run_dir / "checkpoint_last.pt"
    if not path.is_file():
        raise InputError(f"{path}: nothing to resume", hint="run without --resume")
    try:
        ckpt = torch.load(path, map_location=state.device, weights_only=True)
        state.phase, state.epoch = int(ckpt["phase"]), int(ckpt["epoch"])
        state.module.load_state_dict(ckpt["model"])
        if state.teacher is not None:
            state.teacher.load_state_dict(ckpt["teacher"])
        if state.phase < len(phases):
            start_phase(state, phases[state.phase], distributed)
            scale, best, bad = (float(v) for v in ckpt["plateau"])
            state.plateau = Plateau(scale, best, int(bad))
            state.optimizer.load_state_dict(ckpt["optimizer"])
            state.scheduler.load_state_dict(ckpt["scheduler"])
            state.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
    except (RuntimeError, KeyError, EOFError, ValueError) as e:
        raise ModelError(f"{path}: unusable checkpoint ({str(e).splitlines()[0]})") from e
    state.best = float(ckpt["best"])
    trim_metrics(state, phases)


def trim_metrics(state: RunState, phases: list[Phase]) -> None:
    """Drop the metrics lines of epochs after the checkpoint (written before a kill could
    save it): the resumed run writes them again, once."""
    path = state.run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    index = {p.name: i for i, p in enumerate(phases)}
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            at = (index.get(record.get("phase", phases[0].name), 0), int(record["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the kill
        if at <= (state.phase, state.epoch):
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def continue_from_selected(state: RunState) -> Path:
    """The next staged step starts from this step's selected weights (the best epoch's).
    Returns the file they came from, which the next step's own best replaces."""
    import torch

    best = state.run_dir / "weights_best.pt"
    if best.is_file():
        weights = torch.load(best, map_location=state.device, weights_only=True)
        state.exported.load_state_dict(weights)
        if state.teacher is not None and state.exported is state.teacher:
            state.module.load_state_dict(weights)
    return best


def state_hash(state_dict) -> str:
    """SHA-256 over a state dict's names and tensors (a resumed run's equals an
    uninterrupted one's)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
