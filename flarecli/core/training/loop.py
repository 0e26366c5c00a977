"""``flare train``: coarse and fine stages, self-training on FL/CPL/PL data, mean teacher.

The run folder (``OUT/<name>``) is self-describing:

* ``config.json``   the resolved configuration, written before the first step;
* ``metrics.jsonl`` one line per epoch: losses per data kind, validation Dice per class;
* ``checkpoint_last.pt`` model, EMA teacher, optimiser, scheduler, AMP scaler and RNG states,
  saved atomically after every epoch; ``--resume`` continues from it exactly;
* the bundle: ``model.json`` + ``weights_best.pt`` / ``weights_final.pt`` (see core.bundle).

Training is a few small functions over a :class:`RunState`; all randomness is a function of
(seed, rank, epoch, step), so a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import FlareError, InputError, ModelError, check_choice
from flarecli.core.io.nifti import read_volume, write_text_atomic
from flarecli.core.preprocessing.stages import (
    NORMALISATIONS,
    Intensity,
    StageSpec,
    cache_key,
    foreground_intensity,
    foreground_samples,
    load_cached,
    preprocess_case,
    save_cached,
    window,
)
from flarecli.core.runtime import usable_cpus
from flarecli.core.training import data as D

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine")
DEFAULT_SIZE = {"coarse": (128, 128, 128), "fine": (192, 192, 192)}
D_KINDS = ("FL", "CPL", "PL")


@dataclass
class TrainConfig:
    """Every option of a run (written to config.json). Defaults follow StMt's Table 2."""

    source: str
    out: str
    stage: str = "fine"
    target: str = "organs"
    name: str | None = None
    model: str = "student"
    size: tuple[int, int, int] | None = None
    margin_mm: float = 10.0
    jitter: float = 0.1
    normalization: str = "foreground"
    epochs: int = 500
    iterations: int = 250
    batch_size: int = 2
    optimizer: str = "sgd"
    lr: float | None = None
    schedule: str = "poly"
    warmup_epochs: int | None = None
    weight_decay: float = 3e-5
    l1: float = 1.0
    l2: float = 0.5
    ema_decay: float = 0.99
    mt_weight: float = 1.0
    deep_supervision: bool = False
    balanced_ce: bool = False
    augment: bool = True
    seed: int = 0
    val_fraction: float = 0.1
    device: str = "auto"
    workers: int | None = None
    cache: str | None = None
    init: str | None = None

    def resolve(self) -> TrainConfig:
        """Fill stage-dependent defaults and validate; raises InputError."""
        check_choice("stage", self.stage, ("coarse", "fine"))
        if self.stage == "coarse":
            self.target = "abdomen"
        check_choice("target", self.target, D.TARGETS)
        if self.stage == "fine" and self.target == "abdomen":
            raise InputError("the abdomen target belongs to --stage coarse")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("normalization", self.normalization, NORMALISATIONS)
        from flarecli.models import preset

        try:
            preset(self.model)
        except ValueError as e:
            raise InputError(str(e)) from e
        self.name = self.name or default_name(self.stage, self.target)
        self.size = tuple(self.size or DEFAULT_SIZE[self.stage])  # type: ignore[assignment]
        if len(self.size) != 3 or min(self.size) < 8:
            raise InputError(f"--size {self.size}: three sizes >= 8")
        if self.lr is None:
            self.lr = 0.01 if self.optimizer == "sgd" else 3e-4
        if self.warmup_epochs is None:
            self.warmup_epochs = 0 if self.optimizer == "sgd" else max(1, self.epochs // 20)
        for name in ("epochs", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise InputError("--ema-decay must be in [0, 1)")
        return self

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.size is not None:
            cfg.size = tuple(cfg.size)  # type: ignore[assignment]
        return cfg


def default_name(stage: str, target: str) -> str:
    """The run folder name: coarse, organs or tumor."""
    return "coarse" if stage == "coarse" else target


@dataclass
class Progress:
    """Callbacks the CLI renders; core never prints."""

    stage: Callable[[str], None] = lambda text: None
    cache: Callable[[int, int], None] = lambda done, total: None
    step: Callable[[int, int, float], None] = lambda epoch, step, loss: None
    epoch: Callable[[dict[str, Any]], None] = lambda record: None


# ---------------------------------------------------------------------------------------------
# preparation: cases, intensity, cache
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheJob:
    case: D.TrainCase
    path: str
    spec: StageSpec
    intensity: Intensity


def build_cache_entry(job: CacheJob) -> str | None:
    """Preprocess one case into the cache (skipped when present); returns an error or None."""
    path = Path(job.path)
    if path.exists():
        return None
    try:
        image, geometry = read_volume(Path(job.case.image))
        label, label_geometry = read_volume(Path(job.case.label))
        mismatch = geometry.mismatches(label_geometry)
        if mismatch:
            return f"{job.case.id}: image vs label {'; '.join(mismatch)}"
        arrays = preprocess_case(image, label.astype(np.uint8), geometry, job.intensity,
                                 job.spec)
        save_cached(path, arrays)
        return None
    except FlareError as e:
        return f"{job.case.id}: {e}"


def compute_intensity(cases: list[D.TrainCase], cfg: TrainConfig) -> Intensity:
    if cfg.normalization != "foreground":
        return window(cfg.normalization)
    rng = np.random.default_rng(cfg.seed)
    samples = []
    for c in cases:
        image, _ = read_volume(Path(c.image))
        label, _ = read_volume(Path(c.label))
        if image.shape == label.shape:
            samples.append(foreground_samples(image, label, rng))
    return foreground_intensity(np.concatenate(samples) if samples else np.zeros(0))


# ---------------------------------------------------------------------------------------------
# the run state and its pieces
# ---------------------------------------------------------------------------------------------

@dataclass
class RunState:
    cfg: TrainConfig
    run_dir: Path
    device: Any
    model: Any
    module: Any  # the un-wrapped model (DDP wraps `model`)
    teacher: Any | None
    optimizer: Any
    scheduler: Any
    scaler: Any
    epoch: int = 0  # epochs completed
    best: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)


def build_network(cfg: TrainConfig, n_classes: int):
    from flarecli.models import build_model, preset

    args = preset(cfg.model)
    arch = args.pop("arch")
    args.update(in_channels=1, num_classes=n_classes, deep_supervision=cfg.deep_supervision)
    model = build_model(arch, **args)
    divisor = model.divisor()
    if any(s % d for s, d in zip(cfg.size, divisor, strict=True)):  # type: ignore[arg-type]
        raise InputError(f"--size {cfg.size}: each size must be a multiple of {divisor} "
                         f"for model '{cfg.model}'")
    return model, {"name": arch, "args": args}


def warm_start(module, bundle_dir: Path) -> None:
    """Initialise from a bundle's weights: the student from the teacher of the same preset,
    or a tumor model from an organ model. The class heads (``heads.*``) are taken only when
    their shapes fit (same number of classes); every other tensor must fit, else ModelError.
    """
    from flarecli.core.io.bundle import load_bundle

    source, _ = load_bundle(bundle_dir)
    own, theirs = module.state_dict(), source.state_dict()
    misfits = sorted(k for k in set(own) | set(theirs) if not k.startswith("heads.") and (
        k not in own or k not in theirs or own[k].shape != theirs[k].shape))
    if misfits:
        raise ModelError(f"{bundle_dir}: --init bundle does not fit this network "
                         f"({len(misfits)} tensors differ, e.g. {misfits[0]})",
                         hint="use a bundle of the same --model preset")
    module.load_state_dict({**own, **{k: v for k, v in theirs.items()
                                      if k in own and own[k].shape == v.shape}})


def seen_by_init(bundle_dir: Path, val_cases: list[D.TrainCase], target: str) -> str | None:
    """A note when validation cases of this run trained the ``--init`` bundle on the same
    target (a student's hold-out the teacher learned from): their Dice then rewards staying
    close to the teacher, and best-weight selection with it."""
    config = bundle_dir / "config.json"
    if not config.is_file():
        return None
    try:
        meta = json.loads(config.read_text())
        if meta["config"]["target"] != target:
            return None
        seen = {c["id"] for c in meta.get("train_cases", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    both = sorted(c.id for c in val_cases if c.id in seen)
    if not both:
        return None
    return (f"{len(both)} of {len(val_cases)} validation cases ({', '.join(both[:3])}"
            f"{', ...' if len(both) > 3 else ''}) trained the --init bundle: validation Dice "
            "favours the initial weights; use the same --val-fraction and --seed for both "
            "runs, or --val-fraction 0 and the final weights")


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    warm = (cfg.warmup_epochs or 0) * cfg.iterations
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    if cfg.schedule == "poly":
        return (1 - min(t, 1.0)) ** 0.9
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def make_state(cfg: TrainConfig, run_dir: Path, device, n_classes: int, distributed: bool
               ) -> tuple[RunState, dict[str, Any]]:
    import torch

    torch.manual_seed(cfg.seed)
    module, arch = build_network(cfg, n_classes)
    if cfg.init:
        warm_start(module, Path(cfg.init))
    module = module.to(device)
    teacher = None
    if cfg.target == "tumor":
        teacher = copy.deepcopy(module).requires_grad_(False)
    model = module
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[device.index] if device.type ==
                                        "cuda" else None)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.iterations
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total))
    from flarecli.core.runtime import amp_dtype

    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
    return RunState(cfg, run_dir, device, model, module, teacher, opt, sched, scaler), arch


def save_checkpoint(state: RunState) -> None:
    import torch

    from flarecli.core.io.nifti import atomic_path

    ckpt = {
        "model": state.module.state_dict(),
        "teacher": state.teacher.state_dict() if state.teacher is not None else {},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,
        "best": state.best,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(state.run_dir / "checkpoint_last.pt") as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(state: RunState) -> None:
    import torch

    path = state.run_dir / "checkpoint_last.pt"
    if not path.is_file():
        raise InputError(f"{path}: nothing to resume", hint="run without --resume")
    try:
        ckpt = torch.load(path, map_location=state.device, weights_only=True)
        state.module.load_state_dict(ckpt["model"])
        if state.teacher is not None:
            state.teacher.load_state_dict(ckpt["teacher"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        state.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
    except (RuntimeError, KeyError, EOFError) as e:
        raise ModelError(f"{path}: unusable checkpoint ({str(e).splitlines()[0]})") from e
    state.epoch, state.best = int(ckpt["epoch"]), float(ckpt["best"])


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------

class _Samples:
    """torch Dataset over (case index, sample seed) pairs of the cached arrays."""

    def __init__(self, paths: list[Path], cfg: TrainConfig, lut: np.ndarray, aug, prepare: bool):
        self.paths, self.cfg, self.lut, self.aug, self.prepare = paths, cfg, lut, aug, prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        arrays = load_cached(self.paths[index])
        if not self.prepare:
            return arrays, seed
        return D.make_sample(arrays, seed, self.cfg.size, self.cfg.jitter, self.lut, self.aug,
                             "cpu")


def _collate(items):
    return items


#: Share of the run over which the mean-teacher weight ramps up to ``--mt-weight``.
MT_RAMPUP = 0.25


def mt_rampup(step: int, total: int) -> float:
    """Sigmoid ramp-up of the mean-teacher weight, ``exp(-5 (1 - t)^2)`` over the first
    MT_RAMPUP of the steps, then 1 (Tarvainen & Valpola's schedule). A young EMA teacher
    predicts noise (its class heads are new); weighting it fully from the first step teaches
    the student that noise and the two reinforce each other: measured, a warm-started tumor
    model then marked 40,000 voxels per synthetic scan as tumor."""
    t = min(1.0, step / max(1.0, MT_RAMPUP * total))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def train_step(state: RunState, images, labels, kinds: list[str]) -> dict[str, float]:
    import torch

    from flarecli.core.runtime import autocast
    from flarecli.core.training import losses as L

    cfg = state.cfg
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    with autocast(state.device):
        outputs = state.model(images)
        if state.teacher is None:
            terms = L.kind_losses(outputs, labels, kinds, cfg.balanced_ce)
            loss = L.combine(terms, {"FL": 1.0, "CPL": cfg.l1, "PL": cfg.l2})
        else:
            with torch.no_grad():
                teacher_out = state.teacher(images)
                if isinstance(teacher_out, list):
                    teacher_out = teacher_out[0]
            pseudo = L.corrected_pseudo_label(teacher_out, labels == 1)
            terms = {"TL": L.deep_supervised(outputs, labels, cfg.balanced_ce),
                     "MT": L.deep_supervised(outputs, pseudo, cfg.balanced_ce)}
            step, total = state.scheduler.last_epoch, cfg.epochs * cfg.iterations
            loss = terms["TL"] + cfg.mt_weight * mt_rampup(step, total) * terms["MT"]
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    torch.nn.utils.clip_grad_norm_(state.module.parameters(), 12.0)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.teacher is not None:
        # the teacher follows the student closely at first: 1 - 1/(t + 1) until it reaches
        # --ema-decay (Tarvainen & Valpola), else a short run exports a teacher that still
        # remembers its first, untrained steps
        step = state.scheduler.last_epoch
        L.ema_update(state.teacher, state.module, min(cfg.ema_decay, 1.0 - 1.0 / (step + 1)))
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def validate(state: RunState, paths: list[Path], lut: np.ndarray, n_classes: int
             ) -> dict[str, float]:
    """Mean Dice per class (network resolution) of the exported network on held-out cases."""
    import torch

    from flarecli.core.runtime import autocast

    net = state.teacher if state.teacher is not None else state.module
    net.eval()
    sums = np.zeros(n_classes)
    counts = np.zeros(n_classes)
    with torch.no_grad():
        for path in paths:
            image, label = D.make_sample(load_cached(path), 0, state.cfg.size, 0.0, lut, None,
                                         state.device, train=False)
            with autocast(state.device):
                out = net(image[None])
            pred = (out[0] if isinstance(out, list) else out).argmax(1)[0]
            for c in range(1, n_classes):
                g, p = label == c, pred == c
                total = int(g.sum() + p.sum())
                if total:
                    sums[c] += 2 * int((g & p).sum()) / total
                    counts[c] += 1
    return {str(c): float(sums[c] / counts[c]) for c in range(1, n_classes) if counts[c]}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(cfg: TrainConfig, resume: bool = False, progress: Progress | None = None
          ) -> dict[str, Any]:
    """Run (or resume) a training run. Returns a summary (paths, best score, weights hash).

    Launched under ``torchrun`` (WORLD_SIZE > 1) it trains data-parallel: every rank draws
    its own samples, gradients are averaged, rank 0 alone writes files.
    """
    import torch
    import torch.distributed as dist

    from flarecli.core.io.bundle import save_weights, write_bundle
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.runtime import resolve_device, setup_torch

    progress = progress or Progress()
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    run_dir = Path(cfg.out) / (cfg.name or default_name(cfg.stage, cfg.target))
    if resume:
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise InputError(f"{saved}: nothing to resume", hint="run without --resume")
        cfg = TrainConfig.from_json(json.loads(saved.read_text())["config"])
    cfg.resolve()
    run_dir = Path(cfg.out) / cfg.name  # type: ignore[operator]
    device = resolve_device(cfg.device)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    setup_torch(device, benchmark=True)
    lead = rank == 0

    # -- data
    cases, notes = D.training_cases(Path(cfg.source), cfg.target)
    train_cases, val_cases = D.split_validation(cases, cfg.val_fraction, cfg.seed)
    if not train_cases:
        raise InputError("no training cases left after the validation split",
                         hint="lower --val-fraction")
    by_kind = ", ".join(f"{k} {sum(c.kind == k for c in train_cases)}" for k in D_KINDS)
    progress.stage(f"{len(train_cases)} training ({by_kind}) / {len(val_cases)} validation "
                   "cases")
    seen = (seen_by_init(Path(cfg.init), val_cases, cfg.target)
            if cfg.init and val_cases else None)
    notes += [seen] if seen else []
    for note in notes:
        progress.stage(f"note: {note}")
    if resume:
        meta = json.loads((run_dir / "config.json").read_text())
        intensity = Intensity.from_json(meta["intensity"])
    else:
        progress.stage("intensity statistics")
        intensity = compute_intensity(train_cases, cfg)
    spec = StageSpec(cfg.stage, cfg.size, cfg.margin_mm)  # type: ignore[arg-type]
    cache_dir = Path(cfg.cache) if cfg.cache else Path(cfg.out) / "cache" / cfg.stage
    jobs = [CacheJob(c, str(cache_dir / f"{c.id}-{cache_key(spec, intensity, Path(c.label))}"
                                        ".npz"), spec, intensity) for c in cases]
    if lead:
        cache_dir.mkdir(parents=True, exist_ok=True)
        errors = []
        for i, err in enumerate(imap_ordered(build_cache_entry, jobs, cfg.workers or 1)):
            progress.cache(i + 1, len(jobs))
            if err:
                errors.append(err)
        if errors:
            raise InputError(f"{len(errors)} cases could not be preprocessed: {errors[0]}")
    if distributed:
        dist.barrier()
    path_of = {j.case.id: Path(j.path) for j in jobs}
    train_paths = [path_of[c.id] for c in train_cases]
    val_paths = [path_of[c.id] for c in val_cases]

    # -- state
    n_classes = D.num_classes(cfg.target)
    state, arch = make_state(cfg, run_dir, device, n_classes, distributed)
    if resume:
        load_checkpoint(state)
    elif lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", json.dumps({
            "config": cfg.to_json(), "intensity": intensity.to_json(),
            "stage": spec.to_json(), "architecture": arch,
            "train_cases": [asdict(c) for c in train_cases],
            "val_cases": [asdict(c) for c in val_cases], "notes": notes,
            "world_size": world}, indent=2) + "\n")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    lut = D.target_lut(cfg.target)
    aug = None
    if cfg.augment:
        from flarecli.core.preprocessing.orientation import LEFT_RIGHT_AXIS
        from flarecli.core.training.augment import AugmentConfig

        # no left-right mirroring: it would swap the left/right organ pairs
        aug = AugmentConfig(flip_axes=tuple(a for a in range(3) if a != LEFT_RIGHT_AXIS))
    on_device = device.type == "cuda"  # augment on the GPU; workers only load arrays
    dataset = _Samples(train_paths, cfg, lut, aug, prepare=not on_device)
    kinds = [c.kind for c in train_cases]
    sampler = D.KindBalancedSampler(kinds, cfg.batch_size, cfg.iterations, cfg.seed, rank)
    workers = cfg.workers if cfg.workers is not None else (min(4, usable_cpus())
                                                           if on_device else 0)

    # -- epochs
    checksum = ""
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        t0 = time.perf_counter()
        batches = sampler.epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
            pin_memory=on_device)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        wait = 0.0
        t_data = time.perf_counter()
        for step, (batch, items) in enumerate(zip(batches, loader, strict=True)):
            wait += time.perf_counter() - t_data
            if on_device:
                items = [D.make_sample(arr, seed, cfg.size, cfg.jitter, lut, aug, device)
                         for arr, seed in items]
            images = torch.stack([x for x, _ in items]).to(device, non_blocking=True)
            labels = torch.stack([y for _, y in items]).to(device, non_blocking=True)
            batch_kinds = [kinds[i] for i, _ in batch]
            metrics = train_step(state, images, labels, batch_kinds)
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
        if lead:
            if val_paths:
                dice = validate(state, val_paths, lut, n_classes)
                record["val_dice"] = dice
                record["val_mean"] = float(np.mean(list(dice.values()))) if dice else 0.0
                score = record["val_mean"]
            else:
                score = -record["loss"]
            record["best"] = score > state.best
            if record["best"]:
                state.best = score
                save_weights(run_dir, "best", _export(state).state_dict())
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["train_seconds"] = round(train_seconds, 3)
            record["data_wait_fraction"] = round(wait / max(train_seconds, 1e-9), 4)
            if device.type == "cuda":
                record["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(state)
            progress.epoch(record)
        if distributed:
            dist.barrier()

    if lead:
        checksums = {"final": save_weights(run_dir, "final", _export(state).state_dict())}
        best_file = run_dir / "weights_best.pt"
        if best_file.exists():
            from flarecli.core.io.bundle import sha256

            checksums["best"] = sha256(best_file)
        n_cases = len(cases)
        write_bundle(run_dir, {
            "architecture": arch, "stage": cfg.stage, "target": cfg.target,
            "num_classes": n_classes, "label_map": label_map(cfg.target),
            "preprocessing": {"intensity": intensity.to_json(), "stage": spec.to_json()},
            "input_size_zyx": list(cfg.size),  # type: ignore[arg-type]
            "fingerprint": {"cases": n_cases, "train_cases": len(train_cases),
                            "kinds": {k: kinds.count(k) for k in ("FL", "CPL", "PL")},
                            "intensity": intensity.to_json()},
            "training": cfg.to_json(),
            # the flips the network learned to be invariant to: the only honest TTA views
            "mirror_axes": list(aug.flip_axes) if aug is not None else [],
            "default_weights": "best" if val_paths else "final",
            "exported": "ema_teacher" if state.teacher is not None else "model",
        }, checksums)
        checksum = checksums["final"]
    result = {"run_dir": str(run_dir), "epochs": state.epoch, "best": state.best,
              "validated": bool(val_paths),
              "final_sha256": checksum,
              "state_sha256": _state_hash(_export(state).state_dict())}
    if distributed:
        dist.barrier()
    return result


def label_map(target: str) -> dict[str, int]:
    """Network class -> FLARE id (abdomen: 1 = any foreground)."""
    if target == "organs":
        return {str(i): i for i in range(14)}
    return {"0": 0, "1": 14 if target == "tumor" else 1}


def _export(state: RunState):
    return state.teacher if state.teacher is not None else state.module


def _state_hash(state_dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
