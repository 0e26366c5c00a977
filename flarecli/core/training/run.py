"""Training one stage of a recipe into a model folder: ``train(TrainRun)``.

The run folder ``MODEL/<stage>/`` describes itself:

* ``config.json``   the recipe stage as trained (every value resolved), the run options,
  the intensity statistics and the case lists, written before the first step;
* ``metrics.jsonl`` one line per epoch: losses per data kind and head, validation Dice per
  class, seconds;
* ``checkpoint_last.pt`` model, EMA teacher, optimiser, scheduler, AMP scaler, RNG state and
  the phase, saved atomically after every epoch; ``resume`` continues from it exactly;
* the bundle: ``model.json`` + ``weights_best.pt`` / ``weights_final.pt``
  (:mod:`flarecli.core.io.bundle`).

``MODEL/recipe.json`` holds the resolved recipe, whose inference graphs ``flare infer`` runs.

A run is a sequence of phases: one for most methods, one per step for staged training (each
with its own data, trained parameters, heads and learning rate, starting from the previous
step's selected weights). All randomness is a function of (seed, rank, phase, epoch, step),
so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.curation.subsets import SourceCase, read_source, select
from flarecli.core.errors import DataError, FlareError, InputError, ModelError
from flarecli.core.io.files import remove_stale_parts, write_text_atomic
from flarecli.core.io.nifti import read_label_map, read_volume
from flarecli.core.io.outputs import check_output_dir
from flarecli.core.preprocessing import intensity as I
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import head_lut, plain_classes
from flarecli.core.recipes.load import BUILTIN_SUBSETS, recipe_to_json
from flarecli.core.recipes.typed import RecipeError, parse, to_json
from flarecli.core.runtime import usable_cpus
from flarecli.core.training import data as D
from flarecli.core.training.cache import CacheJob, build_cache_entry, cache_key, load_cached

RUN_SCHEMA = 2


@dataclass
class TrainRun:
    """What to train: a stage of a resolved recipe, on the ``data`` subset of ``source`` (a
    dataset folder or a manifest), into ``out/<stage>/``. ``init`` warm-starts from a bundle.
    ``overwrite`` replaces an existing run folder; without it (and without resume) an
    existing one is refused."""

    recipe: S.Recipe
    stage: str
    source: str
    out: str
    data: str | S.Subset | None = None
    init: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    cache: str | None = None
    overwrite: bool = False

    def options(self) -> dict[str, Any]:
        return {"source": str(Path(self.source).resolve()), "out": str(Path(self.out).resolve()),
                "data": to_json(self.data), "init": self.init, "seed": self.seed,
                "device": self.device, "workers": self.workers, "cache": self.cache}


#: A run goes on without the cases it cannot read when at least this share of the cases it
#: would use remains (and every phase keeps a training case); otherwise it stops before
#: training, since the source is more likely wrong than a few of its cases.
MIN_USABLE_FRACTION = 0.5


@dataclass
class Progress:
    """Callbacks the CLI renders; core never prints."""

    stage: Callable[[str], None] = lambda text: None
    problem: Callable[[str, str], None] = lambda case, message: None
    cache: Callable[[int, int], None] = lambda done, total: None
    step: Callable[[int, int, float], None] = lambda epoch, step, loss: None
    epoch: Callable[[dict[str, Any]], None] = lambda record: None


@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed data, trained parameters, heads and schedule."""

    name: str
    cases: tuple[str, ...]  # training case ids
    val_cases: tuple[str, ...]
    heads: tuple[str, ...]
    train: tuple[str, ...]  # parameter-name prefixes trained ('all')
    lr: float
    epochs: int
    iterations: int


# ---------------------------------------------------------------------------------------------
# preparation
# ---------------------------------------------------------------------------------------------

def _named_subsets(recipe: S.Recipe) -> dict[str, Any]:
    return {**BUILTIN_SUBSETS, **recipe.subsets}


def _validation_candidates(cases: list[SourceCase], stage: S.Stage, heads) -> set[str]:
    """Cases whose labels are complete for the trained heads: kind FL (complete by
    definition), or annotating every class the heads predict one by one (a tumor-annotated
    case for a tumor head). A phase without any trains on pseudo-labels only (seed 002's
    first two steps): its corrected and pseudo-labelled cases are the reference then."""
    need: set[int] = set()
    for h in heads:
        need |= plain_classes(stage.network.heads[h])
    complete = {c.id for c in cases if c.kind == "FL" or (need and need <= set(c.annotated))}
    if complete:
        return complete
    # a phase on pseudo-labels only (seed 002's first steps): they are its reference
    return {c.id for c in cases if c.kind in ("PL", "CPL")}


def plan_phases(cases: list[SourceCase], stage: S.Stage, subset, recipe: S.Recipe,
                seed: int) -> list[Phase]:
    """The phases of a run and the cases of each (training and validation)."""
    named = _named_subsets(recipe)
    steps = stage.method.steps if isinstance(stage.method, S.Staged) else [None]
    phases = []
    for step in steps:
        chosen = select(cases, step.data if step is not None else subset, named)
        name = step.name if step is not None else "train"
        if not chosen:
            raise InputError(f"no cases to train stage phase '{name}' on",
                             hint="check the data subset, or run flare pseudolabel + correct "
                             "first for partial labels")
        heads = (step.heads if step is not None and step.heads else None) or stage.trained_heads
        ids = [c.id for c in chosen]
        train_ids, val_ids = D.split_validation(
            ids, _validation_candidates(chosen, stage, heads), stage.val_fraction, seed)
        if not train_ids:
            raise InputError(f"phase '{name}': no training cases left after the validation "
                             "split", hint="lower val_fraction")
        phases.append(Phase(
            name, tuple(train_ids), tuple(val_ids), tuple(heads),
            tuple(step.train) if step is not None else ("all",),
            (step.lr if step is not None and step.lr else stage.optimizer.lr),
            (step.epochs if step is not None and step.epochs else stage.epochs),
            (step.iterations if step is not None and step.iterations else stage.iterations)))
    return phases


def compute_intensity(cases: list[SourceCase], stage: S.Stage, seed: int) -> I.Intensity:
    """The stage's intensity numbers; the foreground scheme samples the labelled voxels of
    the cases that read (an unreadable one is reported when it is cached)."""
    if stage.intensity.scheme != "foreground":
        return I.resolve(stage.intensity)
    rng = np.random.default_rng(seed)
    samples = []
    for c in cases:
        try:
            image, _ = read_volume(Path(c.image))
            label, _ = read_label_map(Path(c.label))  # type: ignore[arg-type]
        except FlareError:
            continue
        if image.shape == label.shape:
            samples.append(I.foreground_samples(image, label, rng))
    return I.resolve(stage.intensity, np.concatenate(samples) if samples else None)


def build_network(stage: S.Stage):
    """The stage's network (CPU) and its architecture record; raises RecipeError for bad
    arguments or an input size the network cannot take."""
    from flarecli.models import build_model, initialise

    heads = {h: len(c) + 1 for h, c in stage.network.heads.items()}
    args = {**stage.network.args, "in_channels": 1, "heads": heads}
    try:
        model = build_model(stage.network.arch, **args)
    except ValueError as e:
        raise RecipeError("network", str(e)) from None
    initialise(model, stage.network.init)
    size = tuple(stage.geometry.input_zyx)
    dims = getattr(model, "dims", 3)
    if dims == 2:
        if size[0] != 1:
            raise RecipeError("geometry", f"a 2-D network takes slices: the input must be "
                              f"1 x H x W, got {list(size)}")
        size = size[1:]
    divisor = model.divisor()
    if any(s % d for s, d in zip(size, divisor, strict=True)):
        raise RecipeError("geometry", f"input {list(stage.geometry.input_zyx)}: each size must "
                          f"be a multiple of {list(divisor)} for this network")
    return model, {"name": stage.network.arch, "args": args}


def trainable_mask(module, prefixes: tuple[str, ...]) -> dict[str, bool]:
    """Which parameters a phase trains. Raises RecipeError for a prefix naming none."""
    names = [n for n, _ in module.named_parameters()]
    if "all" in prefixes:
        return dict.fromkeys(names, True)
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            groups = sorted({n.split(".")[0] for n in names} | {
                ".".join(n.split(".")[:2]) for n in names if n.startswith("branches.")})
            raise RecipeError("train", f"'{p}' names no parameter of the network",
                              hint="parameter groups: " + ", ".join(groups))
    return {n: any(n == p or n.startswith(p + ".") for p in prefixes) for n in names}


def _is_head_tensor(key: str) -> bool:
    return key.startswith("heads.") or ".outputs." in key


def warm_start(module, bundle_dir: Path) -> None:
    """Initialise from a bundle's weights: a student from its teacher, a tumor model from an
    organ model. Output convolutions are taken only when their shapes fit (same classes);
    every other tensor must fit, else ModelError."""
    from flarecli.core.io.bundle import load_bundle

    source, _ = load_bundle(bundle_dir)
    own, theirs = module.state_dict(), source.state_dict()
    misfits = sorted(k for k in set(own) | set(theirs) if not _is_head_tensor(k) and (
        k not in own or k not in theirs or own[k].shape != theirs[k].shape))
    if misfits:
        raise ModelError(f"{bundle_dir}: the init bundle does not fit this network "
                         f"({len(misfits)} tensors differ, e.g. {misfits[0]})",
                         hint="start from a bundle of the same network")
    module.load_state_dict({**own, **{k: v for k, v in theirs.items()
                                      if k in own and own[k].shape == v.shape}})


def seen_by_init(bundle_dir: Path, val_ids: tuple[str, ...], stage: S.Stage) -> str | None:
    """A note when validation cases of this run trained the ``init`` bundle on the same heads
    (a student's hold-out the teacher learned from): their Dice then rewards staying close to
    the teacher, and best-weight selection with it."""
    config = bundle_dir / "config.json"
    if not config.is_file() or not val_ids:
        return None
    try:
        meta = json.loads(config.read_text())
        if meta["stage"]["network"]["heads"] != to_json(stage.network.heads):
            return None
        seen = {c for p in meta["phases"] for c in p["cases"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    both = sorted(c for c in val_ids if c in seen)
    if not both:
        return None
    return (f"{len(both)} of {len(val_ids)} validation cases ({', '.join(both[:3])}"
            f"{', ...' if len(both) > 3 else ''}) trained the init bundle: validation Dice "
            "favours the initial weights; use the same val_fraction and seed for both runs, "
            "or val_fraction 0 and the final weights")


# ---------------------------------------------------------------------------------------------
# the run state
# ---------------------------------------------------------------------------------------------

@dataclass
class RunState:
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
    plateau: dict[str, float] = field(default_factory=lambda: {"scale": 1.0,
                                                                "best": math.inf, "bad": 0})

    @property
    def exported(self):
        return self.teacher if self.teacher is not None and isinstance(
            self.stage.method, S.MeanTeacher) and self.stage.method.export == "teacher" \
            else self.module


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


def plateau_update(state: RunState, monitored: float) -> None:
    """Reduce-on-plateau bookkeeping after an epoch (schedule 'plateau')."""
    opt = state.stage.optimizer
    p = state.plateau
    if monitored < p["best"] - 1e-3:
        p["best"], p["bad"] = monitored, 0
    else:
        p["bad"] += 1
        if p["bad"] > opt.plateau_patience:
            p["scale"], p["bad"] = p["scale"] * opt.plateau_factor, 0


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
    state.plateau = {"scale": 1.0, "best": math.inf, "bad": 0}
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(opt, s, total, phase.iterations,
                                       state.plateau["scale"]))
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
    import torch

    from flarecli.core.io.bundle import torch_bytes
    from flarecli.core.io.files import atomic_path

    ckpt = {
        "model": state.module.state_dict(),
        "teacher": state.teacher.state_dict() if state.teacher is not None else {},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "phase": state.phase,
        "epoch": state.epoch,
        "best": state.best,
        "plateau": [state.plateau["scale"], state.plateau["best"], state.plateau["bad"]],
        "torch_rng": torch.get_rng_state(),
    }
    data = torch_bytes(ckpt)
    with atomic_path(state.run_dir / "checkpoint_last.pt") as tmp:
        tmp.write_bytes(data)


def load_checkpoint(state: RunState, phases: list[Phase], distributed: bool) -> None:
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
            state.plateau = {"scale": scale, "best": best, "bad": int(bad)}
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


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

class _Samples:
    """torch Dataset over (case index, sample seed) pairs of the cached arrays."""

    def __init__(self, paths: list[Path], stage: S.Stage, aug, swap_lr, prepare: bool):
        self.paths, self.stage, self.aug, self.swap_lr = paths, stage, aug, swap_lr
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        arrays = load_cached(self.paths[index])
        if not self.prepare:
            return arrays, seed
        return D.make_sample(arrays, seed, self.stage.geometry, self.aug, "cpu",
                             swap_lr=self.swap_lr)


def _collate(items):
    return items


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


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def open_run(run: TrainRun, resume: bool) -> tuple[TrainRun, S.Stage, Path, dict | None]:
    """The run folder and the stage to train: from the recipe, or from the folder's
    config.json when resuming. Refuses to replace a run folder without ``overwrite``."""
    run_dir = Path(run.out) / run.stage
    if resume:
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise InputError(f"{saved}: nothing to resume", hint="run without --resume")
        meta = json.loads(saved.read_text())
        if meta.get("schema") != RUN_SCHEMA:
            raise ModelError(f"{saved}: written by another flare version; start again",
                             hint="--overwrite")
        stage = parse(S.Stage, meta["stage"], f"{saved}: stage")
        o = meta["run"]
        data = o["data"] if isinstance(o["data"], str) or o["data"] is None else parse(
            S.Subset, o["data"])
        run = TrainRun(run.recipe, run.stage, o["source"], run.out, data, o["init"],
                       o["seed"], run.device if run.device != "auto" else o["device"],
                       run.workers if run.workers is not None else o["workers"], o["cache"])
        return run, stage, run_dir, meta
    if run.stage not in run.recipe.stages:
        from flarecli.core.errors import did_you_mean

        raise RecipeError("--stage", f"'{run.stage}' is not a stage of recipe "
                          f"'{run.recipe.name}'",
                          hint=did_you_mean(run.stage, list(run.recipe.stages))
                          or f"stages: {', '.join(run.recipe.stages)}")
    if run.data is not None:
        from flarecli.core.recipes.load import check_subset

        check_subset(run.recipe, run.data, "--data")
    if run.init and Path(run.init).resolve() == run_dir.resolve():
        raise InputError(f"--init {run.init}: is the run folder this training would replace",
                         hint="train into another --out, or start from a copy")
    if run_dir.exists() and any(run_dir.iterdir()) and not run.overwrite:
        raise InputError(f"{run_dir}: a training run is already there",
                         hint="--resume to continue it, or --overwrite to replace it")
    return run, run.recipe.stages[run.stage], run_dir, None


def _augment_config(stage: S.Stage):
    """The AugmentConfig of a stage (None without augmentation) and the left-right label swap
    (array axis, LUT) when a left-right mirror is among its flips."""
    if stage.augmentation is None:
        return None, None
    from flarecli.core.labels import LR_SWAP
    from flarecli.core.preprocessing.orientation import array_axis
    from flarecli.core.training.augment import AugmentConfig

    a = stage.augmentation
    axes = {name: array_axis(stage.orientation, name) for name in S.ANATOMICAL_AXES}
    fields = {**a.settings, "flip_axes": tuple(sorted(axes[m] for m in a.mirror)),
              "rotation_axes": tuple(sorted(axes[r] for r in a.rotation_about))}
    try:
        config = (AugmentConfig(**fields) if a.base == "nnunet" else
                  AugmentConfig.none(**{"p_flip": AugmentConfig.p_flip, **fields}))
    except (TypeError, ValueError) as e:
        raise RecipeError("augmentation.settings", str(e)) from None
    swap = (axes["LR"], LR_SWAP) if "LR" in a.mirror else None
    return config, swap


def write_model_recipe(model_dir: Path, recipe: S.Recipe) -> None:
    """``MODEL/recipe.json``: the resolved recipe whose graphs ``flare infer`` runs. A model
    folder holds the stages of one recipe."""
    path = model_dir / "recipe.json"
    if path.is_file():
        try:
            other = json.loads(path.read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            other = None
        if other is not None and other != recipe.name:
            raise InputError(f"{model_dir}: holds stages of recipe '{other}', not "
                             f"'{recipe.name}'", hint="train into another model folder")
    write_text_atomic(path, json.dumps(recipe_to_json(recipe), indent=2) + "\n")


@dataclass
class Context:
    """Where this process trains: its device and its place in a distributed run."""

    device: Any
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def make_context(device_name: str) -> Context:
    """Device, threads and, under ``torchrun`` (WORLD_SIZE > 1), the process group."""
    import torch
    import torch.distributed as dist

    from flarecli.core.runtime import resolve_device, setup_torch

    rank, world, local_rank = _dist_info()
    device = resolve_device(device_name)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    setup_torch(device, benchmark=True)
    return Context(device, rank, world)


@dataclass
class Prepared:
    """The run's data: cases by id, phases, intensity numbers, cached arrays, notes, and the
    cases left out because they could not be read (case id, problem)."""

    cases: dict[str, SourceCase]
    phases: list[Phase]
    intensity: I.Intensity
    paths: dict[str, Path]
    notes: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)


def _without(phases: list[Phase], bad: set[str]) -> list[Phase]:
    return [Phase(p.name, tuple(i for i in p.cases if i not in bad),
                  tuple(i for i in p.val_cases if i not in bad), p.heads, p.train, p.lr,
                  p.epochs, p.iterations) for p in phases]


def check_enough(n_bad: int, n_cases: int, phases: list[Phase] = ()) -> None:
    """Raise DataError unless enough cases remain (MIN_USABLE_FRACTION of ``n_cases``, and
    a training case in every phase)."""
    if n_cases - n_bad < MIN_USABLE_FRACTION * n_cases or any(not p.cases for p in phases):
        raise DataError(f"{n_bad} of {n_cases} cases cannot be used (see the lines above): "
                        "too few left to train on", hint="fix the cases, or give a source "
                        "without them (a manifest lists which to use)")


def case_folders(cases: list[SourceCase]) -> list[Path]:
    """The folders holding a source's images and labels (outputs must not land there)."""
    return sorted({Path(f).parent for c in cases for f in (c.image, c.label) if f})


def prepare_data(run: TrainRun, stage: S.Stage, meta: dict | None, ctx: Context,
                 progress: Progress) -> Prepared:
    """Read the source, plan the phases, resolve the intensity, fill the cache."""
    from flarecli.core.parallel import imap_ordered

    workers = run.workers if run.workers is not None else 1
    source_cases, notes, problems = read_source(Path(run.source), max(1, workers))
    for case, message in problems:
        progress.problem(case, message)
    by_id = {c.id: c for c in source_cases}
    labelled = [c for c in source_cases if c.label is not None]
    phases = plan_phases(labelled, stage, run.data if run.data is not None else stage.data,
                         run.recipe, run.seed)
    check_enough(len(problems), len(labelled) + len(problems))
    cache_dir = Path(run.cache) if run.cache else Path(run.out) / "cache"
    if ctx.lead:
        folders = case_folders(source_cases)
        if Path(run.source).is_dir():
            folders.append(Path(run.source))
        check_output_dir(Path(run.out), "--out", case_dirs=folders)
        check_output_dir(cache_dir, "--cache", case_dirs=folders)
    for p in phases:
        kinds = [by_id[i].kind for i in p.cases]
        if isinstance(stage.method, S.SelfTraining):
            unweighted = sorted(set(kinds) - set(stage.method.weights))
            if unweighted:
                kind = unweighted[0]
                raise RecipeError(f"stages.{run.stage}.method.weights",
                                  f"{kinds.count(kind)} training cases are of kind '{kind}', "
                                  "which has no self-training weight",
                                  hint="train on another --data subset (e.g. FL), or give "
                                  f"kind '{kind}' a weight")
        counts = ", ".join(f"{k} {kinds.count(k)}" for k in dict.fromkeys(kinds))
        progress.stage(f"{p.name}: {len(p.cases)} training ({counts}) / {len(p.val_cases)} "
                       "validation cases")
    if run.init:
        seen = seen_by_init(Path(run.init), phases[0].val_cases, stage)
        notes += [seen] if seen else []
    for note in notes:
        progress.stage(f"note: {note}")
    used = sorted({i for p in phases for i in (*p.cases, *p.val_cases)})
    if meta is not None:
        intensity = I.Intensity.from_json(meta["intensity"])
    else:
        progress.stage("intensity statistics")
        intensity = compute_intensity([by_id[i] for i in used], stage, run.seed)
    jobs = [CacheJob(i, by_id[i].image, str(by_id[i].label),
                     str(cache_dir / f"{i}-{cache_key(stage, intensity, Path(by_id[i].label))}"
                                     ".npz"), stage, intensity) for i in used]
    failed: list[tuple[str, str]] = []
    if ctx.lead:
        remove_stale_parts(cache_dir)
        for n, (job, err) in enumerate(zip(jobs, imap_ordered(build_cache_entry, jobs, workers),
                                           strict=True)):
            progress.cache(n + 1, len(jobs))
            if err:
                failed.append((job.case_id, err))
                progress.problem(job.case_id, err)
        if failed:
            phases = _without(phases, {c for c, _ in failed})
            check_enough(len(failed), len(used), phases)
    ctx.barrier()
    return Prepared(by_id, phases, intensity, {j.case_id: Path(j.path) for j in jobs}, notes,
                    problems + failed)


def start_state(run: TrainRun, stage: S.Stage, run_dir: Path, meta: dict | None, module,
                arch: dict[str, Any], data: Prepared, ctx: Context) -> RunState:
    """The network (warm-started), its EMA teacher, and either the checkpoint's state
    (resume) or a fresh run folder with its config.json."""
    if run.init and meta is None:
        warm_start(module, Path(run.init))
    module = module.to(ctx.device)
    if channels_last(module, ctx.device):
        import torch

        module = module.to(memory_format=torch.channels_last_3d)
    teacher = None
    if isinstance(stage.method, S.MeanTeacher):
        teacher = copy.deepcopy(module).requires_grad_(False)
    state = RunState(stage, run_dir, ctx.device, module, module, teacher)
    if meta is not None:
        remove_stale_parts(run_dir)
        load_checkpoint(state, data.phases, ctx.distributed)
        return state
    if ctx.lead:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_model_recipe(Path(run.out), run.recipe)
        write_text_atomic(run_dir / "config.json", json.dumps({
            "schema": RUN_SCHEMA, "recipe": run.recipe.name, "preset": run.recipe.preset,
            "stage_name": run.stage, "stage": to_json(stage), "run": run.options(),
            "intensity": data.intensity.to_json(), "architecture": arch,
            "phases": [to_json(p) for p in data.phases], "notes": data.notes,
            "world_size": ctx.world}, indent=2) + "\n")
    start_phase(state, data.phases[0], ctx.distributed)
    return state


def channels_last(module, device) -> bool:
    """Whether a 3-D network trains with channels-last tensors: on the CPU, where oneDNN's
    convolution backward for the few channels of small networks is much faster so (the demo's
    organ model: a training step 0.319 -> 0.256 s with AVX-512, 0.472 -> 0.376 s limited to
    AVX2). Results are the same up to rounding."""
    return device.type == "cpu" and getattr(module, "dims", 3) == 3


@dataclass
class Feed:
    """How samples reach the network: per-head lookup tables, augmentation (and the
    left-right label swap), 2-D or 3-D input, loader workers, augmentation on the GPU."""

    luts: dict[str, Any]
    aug: Any
    swap: Any
    dims: int
    loader_workers: int
    on_device: bool
    channels_last: bool = False


def make_feed(stage: S.Stage, module, run: TrainRun, ctx: Context) -> Feed:
    import torch

    aug, swap = _augment_config(stage)
    on_device = ctx.device.type == "cuda"  # augment on the GPU; workers only load arrays
    return Feed({h: torch.as_tensor(head_lut(c), device=ctx.device).long()
                 for h, c in stage.network.heads.items()}, aug, swap,
                getattr(module, "dims", 3),
                run.workers if run.workers is not None else (min(4, usable_cpus())
                                                             if on_device else 0), on_device,
                channels_last(module, ctx.device))


def run_phases(state: RunState, data: Prepared, feed: Feed, ctx: Context, seed: int,
               progress: Progress) -> None:
    """Every remaining phase; a staged step starts from the previous step's best weights."""
    phases = data.phases
    while state.phase < len(phases):
        phase = phases[state.phase]
        train_phase(state, phase, [data.paths[i] for i in phase.cases],
                    [data.paths[i] for i in phase.val_cases],
                    [data.cases[i].kind for i in phase.cases], feed, ctx, seed, progress,
                    multi=len(phases) > 1)
        state.phase += 1
        state.epoch = 0
        if state.phase < len(phases):
            best = _continue_from_selected(state)
            state.best = -math.inf
            start_phase(state, phases[state.phase], ctx.distributed)
            if ctx.lead:
                save_checkpoint(state)
                best.unlink(missing_ok=True)  # after the checkpoint: a crash replays the load


def train(run: TrainRun, resume: bool = False, progress: Progress | None = None
          ) -> dict[str, Any]:
    """Run (or resume) the training of one stage. Returns a summary (paths, best score,
    weights hash).

    Launched under ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel: every rank draws
    its own samples, gradients are averaged, rank 0 alone writes files.
    """
    import torch

    progress = progress or Progress()
    run, stage, run_dir, meta = open_run(run, resume)
    ctx = make_context(run.device)
    torch.manual_seed(run.seed)
    module, arch = build_network(stage)
    if isinstance(stage.method, S.Staged):  # a bad parameter group fails before any work
        for step in stage.method.steps:
            trainable_mask(module, tuple(step.train))
    data = prepare_data(run, stage, meta, ctx, progress)
    state = start_state(run, stage, run_dir, meta, module, arch, data, ctx)
    run_phases(state, data, make_feed(stage, module, run, ctx), ctx, run.seed, progress)
    validated = any(p.val_cases for p in data.phases)
    checksum = ""
    if ctx.lead:
        checksum = export_bundle(state, run, stage, arch, data)
    result = {"run_dir": str(run_dir), "epochs": sum(p.epochs for p in data.phases),
              "best": state.best, "validated": validated, "final_sha256": checksum,
              "state_sha256": _state_hash(state.exported.state_dict()),
              "problems": data.problems,
              "cases": sorted({i for p in data.phases for i in (*p.cases, *p.val_cases)})}
    ctx.barrier()
    return result


def _continue_from_selected(state: RunState) -> Path:
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


def train_phase(state: RunState, phase: Phase, train_paths: list[Path], val_paths: list[Path],
                kinds: list[str], feed: Feed, ctx: Context, seed: int, progress: Progress,
                multi: bool) -> None:
    """The epochs of one phase: sample, step, validate, keep the best, checkpoint."""
    import torch

    from flarecli.core.io.bundle import save_weights

    stage = state.stage
    balance = isinstance(stage.method, S.SelfTraining) and stage.method.balance_kinds
    sampler = D.KindBalancedSampler(kinds if balance else ["all"] * len(kinds),
                                    stage.batch_size, phase.iterations,
                                    seed if not multi else seed + 1000 * state.phase, ctx.rank)
    dataset = _Samples(train_paths, stage, feed.aug, feed.swap, prepare=not feed.on_device)
    while state.epoch < phase.epochs:
        epoch = state.epoch
        t0 = time.perf_counter()
        batches = sampler.epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=feed.loader_workers,
            collate_fn=_collate, pin_memory=feed.on_device)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        wait = 0.0
        t_data = time.perf_counter()
        for step, (batch, items) in enumerate(zip(batches, loader, strict=True)):
            wait += time.perf_counter() - t_data
            if feed.on_device:
                items = [D.make_sample(arr, s, stage.geometry, feed.aug, state.device,
                                       swap_lr=feed.swap) for arr, s in items]
            images = torch.stack([x for x, _ in items]).to(state.device, non_blocking=True)
            if feed.channels_last:
                images = images.contiguous(memory_format=torch.channels_last_3d)
            labels = torch.stack([y for _, y in items]).to(state.device, non_blocking=True)
            batch_kinds = [kinds[i] for i, _ in batch]
            metrics = train_step(state, phase, images, labels, batch_kinds, feed.luts, feed.dims)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            progress.step(epoch, step, metrics["loss"])
            t_data = time.perf_counter()
        state.epoch = epoch + 1
        train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": state.epoch,
                                  "lr": state.optimizer.param_groups[0]["lr"],
                                  **{f"loss_{k}" if k != "loss" else k: sums[k] / counts[k]
                                     for k in sums}}
        if multi:
            record = {"phase": phase.name, **record}
        if ctx.lead:
            if val_paths:
                dice, val_loss, val_dice_loss = validate(state, phase, val_paths, feed.luts,
                                                         feed.dims)
                record["val_dice"] = dice
                record["val_mean"] = float(np.mean(list(dice.values()))) if dice else 0.0
                record["val_loss"] = val_loss
                record["val_dice_loss"] = val_dice_loss
                score = {"dice": record["val_mean"], "loss": -val_loss,
                         "dice_loss": -val_dice_loss}[stage.select]
            else:
                score = -record["loss"]
            record["best"] = score > state.best
            if record["best"]:
                state.best = score
                save_weights(state.run_dir, "best", state.exported.state_dict())
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["train_seconds"] = round(train_seconds, 3)
            record["data_wait_fraction"] = round(wait / max(train_seconds, 1e-9), 4)
            if state.device.type == "cuda":
                record["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(state.device)
                                              / 2**20)
            if stage.optimizer.schedule == "plateau":
                plateau_update(state, record.get("val_loss", record["loss"]))
            with open(state.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(state)
            progress.epoch(record)
        ctx.barrier()


def export_bundle(state: RunState, run: TrainRun, stage: S.Stage, arch: dict[str, Any],
                  data: Prepared) -> str:
    """Write the bundle: the final (and best) weights of the exported network, model.json.
    Returns the final weights' SHA-256."""
    from flarecli.core.io.bundle import save_weights, sha256, write_bundle

    run_dir = state.run_dir
    checksums = {"final": save_weights(run_dir, "final", state.exported.state_dict())}
    best_file = run_dir / "weights_best.pt"
    if best_file.exists():
        checksums["best"] = sha256(best_file)
    phases, intensity = data.phases, data.intensity
    last = phases[-1]
    kinds = [data.cases[i].kind for i in last.cases]
    write_bundle(run_dir, {
        "recipe": run.recipe.name, "preset": run.recipe.preset, "stage_name": run.stage,
        "stage": to_json(stage), "architecture": arch, "intensity": intensity.to_json(),
        "fingerprint": {"cases": len({i for p in phases for i in p.cases}),
                        "kinds": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
                        "intensity": intensity.to_json()},
        "training": run.options(),
        "default_weights": "best" if last.val_cases else "final",
        "exported": "ema_teacher" if state.exported is state.teacher else "model",
    }, checksums)
    return checksums["final"]


def _state_hash(state_dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
