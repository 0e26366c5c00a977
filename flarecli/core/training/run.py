"""Training one stage of a recipe into a model folder: ``train(TrainRun)``.

The run folder ``MODEL/<stage>/`` describes itself:

* ``config.json``   the recipe stage as trained (every value resolved), the run options,
  the intensity statistics and the case lists, written before the first step;
* ``metrics.jsonl`` one line per epoch: losses per data kind and head, validation Dice per
  class, seconds;
* ``progress.png`` the curves of metrics.jsonl (losses per head, validation, learning rate,
  epoch time, the selected epoch marked), redrawn atomically after every epoch;
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

import contextlib
import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import InputError, ModelError
from flarecli.core.io.files import remove_stale_parts, write_text_atomic
from flarecli.core.io.lock import output_lock
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import RecipeError, parse, to_json
from flarecli.core.report.curves import write_progress
from flarecli.core.training import data as D
from flarecli.core.training.context import Context, make_context
from flarecli.core.training.export import export_bundle, write_model_recipe
from flarecli.core.training.feed import Feed, Samples, collate, make_feed
from flarecli.core.training.network import build_network, channels_last, trainable_mask, warm_start
from flarecli.core.training.options import Progress, TrainRun
from flarecli.core.training.phases import Phase
from flarecli.core.training.prepare import Prepared, prepare_data
from flarecli.core.training.state import (
    RunState,
    continue_from_selected,
    load_checkpoint,
    save_checkpoint,
    start_phase,
    state_hash,
)
from flarecli.core.training.step import train_epoch, validate

RUN_SCHEMA = 2


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
    if run_dir.exists() and (locked := _not_removable(run_dir)):
        # found now, not after the preprocessing with half the old run deleted
        raise InputError(f"{run_dir}: cannot be replaced ({locked}: permission denied)",
                         hint="train into another --out, or ask the folder's owner")
    return run, run.recipe.stages[run.stage], run_dir, None


def _not_removable(folder: Path) -> Path | None:
    """A folder that keeps ``folder``'s tree from being deleted (one whose entries this user
    may not remove), or None."""
    import os

    for d in (folder.parent, folder, *sorted(p for p in folder.rglob("*")
                                              if p.is_dir() and not p.is_symlink())):
        if not os.access(d, os.W_OK | os.X_OK):
            return d
    return None


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
            best = continue_from_selected(state)
            state.best = -math.inf
            start_phase(state, phases[state.phase], ctx.distributed)
            if ctx.lead:
                save_checkpoint(state)
                best.unlink(missing_ok=True)  # after the checkpoint: a crash replays the load


def train_phase(state: RunState, phase: Phase, train_paths: list[Path], val_paths: list[Path],
                kinds: list[str], feed: Feed, ctx: Context, seed: int, progress: Progress,
                multi: bool) -> None:
    """The epochs of one phase: sample, step, validate, keep the best, checkpoint."""
    import torch

    stage = state.stage
    balance = isinstance(stage.method, S.SelfTraining) and stage.method.balance_kinds
    sampler = D.KindBalancedSampler(kinds if balance else ["all"] * len(kinds),
                                    stage.batch_size, phase.iterations,
                                    seed if not multi else seed + 1000 * state.phase, ctx.rank)
    dataset = Samples(train_paths, stage, feed, prepare=not feed.on_device)
    while state.epoch < phase.epochs:
        epoch = state.epoch
        t0 = time.perf_counter()
        batches = sampler.epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=feed.loader_workers,
            collate_fn=collate, pin_memory=feed.on_device)
        losses, wait = train_epoch(state, phase, batches, loader, kinds, feed, progress)
        state.epoch = epoch + 1
        train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": state.epoch,
                                  "lr": state.optimizer.param_groups[0]["lr"],
                                  **{f"loss_{k}" if k != "loss" else k: v
                                     for k, v in losses.items()}}
        if multi:
            record = {"phase": phase.name, **record}
        if ctx.lead:
            _close_epoch(state, phase, record, val_paths, feed)
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["train_seconds"] = round(train_seconds, 3)
            record["data_wait_fraction"] = round(wait / max(train_seconds, 1e-9), 4)
            if state.device.type == "cuda":
                record["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(state.device)
                                              / 2**20)
            if stage.optimizer.schedule == "plateau":
                state.plateau.update(record.get("val_loss", record["loss"]), stage.optimizer)
            with open(state.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            write_progress(state.run_dir)  # progress.png: the curves so far, redrawn each epoch
            save_checkpoint(state)
            progress.epoch(record)
        ctx.barrier()


def _close_epoch(state: RunState, phase: Phase, record: dict[str, Any], val_paths: list[Path],
                 feed: Feed) -> None:
    """Validation (when the phase has validation cases) into ``record``, and the epoch's
    score against the best so far: a better one saves ``weights_best.pt``."""
    from flarecli.core.io.bundle import save_weights

    if val_paths:
        dice, val_loss, val_dice_loss = validate(state, phase, val_paths, feed.luts, feed.dims)
        record["val_dice"] = dice
        record["val_mean"] = float(np.mean(list(dice.values()))) if dice else 0.0
        record["val_loss"] = val_loss
        record["val_dice_loss"] = val_dice_loss
        score = {"dice": record["val_mean"], "loss": -val_loss,
                 "dice_loss": -val_dice_loss}[state.stage.select]
    else:
        score = -record["loss"]
    record["best"] = score > state.best
    if record["best"]:
        state.best = score
        save_weights(state.run_dir, "best", state.exported.state_dict())


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
    data = prepare_data(run, stage, meta, ctx, progress)  # --out checked: not among the cases
    with contextlib.ExitStack() as held:
        if ctx.lead:  # one run per stage and model folder: another (even with --overwrite)
            # would mix its epochs into this one's metrics and replace its weights as it went
            held.enter_context(output_lock(Path(run.out), f"train-{run.stage}"))
        state = start_state(run, stage, run_dir, meta, module, arch, data, ctx)
        run_phases(state, data, make_feed(stage, module, run, ctx), ctx, run.seed, progress)
        checksum = export_bundle(state, run, stage, arch, data) if ctx.lead else ""
    validated = any(p.val_cases for p in data.phases)
    result = {"run_dir": str(run_dir), "epochs": sum(p.epochs for p in data.phases),
              "best": state.best, "validated": validated, "final_sha256": checksum,
              "state_sha256": state_hash(state.exported.state_dict()),
              "problems": data.problems, "file_problems": data.file_problems,
              "cases": sorted({i for p in data.phases for i in (*p.cases, *p.val_cases)})}
    ctx.barrier()
    return result
