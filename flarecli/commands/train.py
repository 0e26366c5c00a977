"""``flare train``: train one stage of a recipe into a model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._ui import DEVICE, PRESET, RECIPE, SET, err, out, problem
from flarecli.core.words import count


def train(
    source: Path = typer.Argument(..., help="Dataset folder, audit manifest or correct manifest."),
    out_dir: Path = typer.Option(..., "--out", help="Model folder (the stage goes to "
                                 "OUT/<stage>/)."),
    stage: str = typer.Option(..., "--stage", help="The recipe stage to train (stmt: coarse, "
                              "organs, teacher, tumor; flare recipes show NAME lists them)."),
    recipe: str = RECIPE,
    preset: str | None = PRESET,
    overrides: list[str] = SET,
    data: str | None = typer.Option(None, "--data", help="Subset of SOURCE to train on "
                                    "(default: the stage's), e.g. FL, all, tumor_annotated."),
    model: str | None = typer.Option(None, "--model", help="Network preset instead of the "
                                     "stage's: student, teacher, small, tiny."),
    size: str | None = typer.Option(None, "--size", help="Network input 'D,H,W' or 'N' (the "
                                    "fixed size, or the patch of a patch stage)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    iterations: int | None = typer.Option(None, "--iterations", min=1,
                                          help="Steps per epoch."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", help="Initial learning rate."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment",
                                        help="Keep or drop the stage's augmentation."),
    val_fraction: float | None = typer.Option(None, "--val-fraction"),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE,
    workers: int | None = typer.Option(None, "--workers", "-j", min=0,
                                       help="Preprocessing processes (default 1); with "
                                       "CUDA also loader workers (default 4). On the CPU "
                                       "the training process makes its samples."),
    cache: Path | None = typer.Option(None, "--cache", help="Preprocessed-array cache folder "
                                      "(default OUT/cache)."),
    init: Path | None = typer.Option(None, "--init", help="Start from the weights of this "
                                     "bundle (the same network), e.g. the teacher; its output "
                                     "layers only when the classes match."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/<stage> from its last "
                                "checkpoint (its settings come from its config.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run "
                                   "folder."),
) -> None:
    """Train a stage of a recipe; writes a self-describing run folder and bundle.

    The stage's settings come from the recipe and preset; --set KEY=VALUE changes any field
    (e.g. --set stages.organs.optimizer.lr=0.001), and the shortcut options change the
    stage's most used ones.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from flarecli.core.recipes.load import load_with_shortcuts
    from flarecli.core.training import run as core

    resolved = load_with_shortcuts(recipe, preset, overrides, stage, model=model, size=size,
                                   epochs=epochs, iterations=iterations,
                                   batch_size=batch_size, lr=lr, augment=augment,
                                   val_fraction=val_fraction)
    run = core.TrainRun(resolved, stage, str(source), str(out_dir), data=data,
                        init=str(init) if init else None, seed=seed, device=device,
                        workers=workers, cache=str(cache) if cache else None,
                        overwrite=overwrite)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        result = core.train(run, resume=resume, progress=train_progress(bar))
    score = (f"best validation score {result['best']:.4f}" if result["validated"]
             else f"best training loss {-result['best']:.4f}")
    out.print(f"trained {count(result['epochs'], 'epoch')} -> {result['run_dir']} ({score})",
              highlight=False)
    left_out, files = len(result["problems"]), len(result["file_problems"])
    if left_out or files:
        from flarecli.core.errors import CasesFailed

        # a problem of the dataset's own files (dataset.json) leaves no case out
        raise CasesFailed(left_out + files, left_out + len(result["cases"]) + files,
                          "cases/files" if files else "cases (left out of training)")


def train_progress(bar=None):
    """A training Progress that prints each epoch to stderr (and drives ``bar`` if given)."""
    from flarecli.core.training import run as core

    task = bar.add_task("train", total=None, info="") if bar is not None else None

    def on_epoch(r: dict) -> None:
        val = f" val Dice {r['val_mean']:.3f}" if "val_mean" in r else ""
        phase = f"{r['phase']} " if "phase" in r else ""
        err.print(f"{phase}epoch {r['epoch']}: loss {r['loss']:.4f}{val} "
                  f"({r['seconds']:.1f} s){' *' if r['best'] else ''}", highlight=False)

    def on_cache(i: int, n: int) -> None:
        if bar is not None:
            bar.update(task, description="preprocess", completed=i, total=n, info="")

    def on_step(e: int, s: int, loss: float) -> None:
        if bar is not None:
            bar.update(task, description=f"epoch {e + 1}", info=f"loss {loss:.4f}")

    return core.Progress(stage=lambda text: err.print(text, highlight=False), cache=on_cache,
                         step=on_step, epoch=on_epoch, problem=problem)
