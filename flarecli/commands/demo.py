"""``flare demo``: a recipe's whole pipeline on a fresh synthetic dataset, step by step."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flarecli.commands._ui import DEVICE, SET, err, out


def demo(
    out_dir: Path = typer.Argument(Path("demo"), help="Folder for every artefact."),
    recipe: str = typer.Option("stmt", "--recipe", help="A built-in recipe or a recipe file."),
    preset: str = typer.Option("cpu", "--preset", help="smoke (seconds), cpu (10-17 "
                               "minutes on 2 cores) or paper (a GPU). flare demo's default "
                               "is cpu; flare train's is the recipe's own (paper)."),
    overrides: list[str] = SET,
    device: str = DEVICE,
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes for synth, "
                                "audit, preprocessing and correction."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo every step (a re-run "
                                   "otherwise keeps the finished ones)."),
) -> None:
    """Run a recipe's pipeline on synthetic data: synth -> audit -> the recipe's steps
    (StMt: teacher -> pseudolabel -> correct -> student coarse, organs on FL/CPL/PL,
    mean-teacher tumor) -> infer on the test split -> evaluate."""
    from flarecli.commands.evaluate import render
    from flarecli.commands.train import train_progress
    from flarecli.core.pipeline import demo as core
    from flarecli.core.pipeline.runner import PipelineProgress

    def on_step(name: str, title: str) -> None:
        err.rule(f"[bold]{name}: {title}", align="left")

    def on_done(report) -> None:
        what = "done before (unchanged)" if report.skipped else f"{report.seconds:.1f} s"
        err.print(f"[dim]{what}[/dim]" + (f" -- {report.note}" if report.note else ""),
                  highlight=False)

    t0 = time.perf_counter()
    result = core.run_demo(
        core.DemoRun(recipe, preset, out_dir, tuple(overrides), device=device, seed=seed,
                     workers=workers, overwrite=overwrite),
        PipelineProgress(step=on_step, done=on_done,
                         note=lambda text: err.print(text, highlight=False),
                         train=train_progress()))
    render(result.scores)
    if preset == "smoke":  # an all-zero table looked like a broken install
        out.print("smoke checks that every step runs: each model trains for seconds on tiny "
                  "scans, so scores near 0 are expected. --preset cpu trains a model that "
                  "segments (10-17 minutes on 2 cores).", highlight=False)
    curves = sorted(out_dir.glob("run/**/progress.png"))
    if curves:
        out.print("training curves: " + ", ".join(str(c) for c in curves), highlight=False)
    out.print(f"demo finished in {time.perf_counter() - t0:.0f} s; every artefact is in "
              f"{out_dir} (scores: {result.scores_path})", highlight=False)
