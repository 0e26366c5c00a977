"""``flare train``: train the coarse, organ or tumor model of the StMt recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._ui import err, out


def train(
    source: Path = typer.Argument(..., help="Dataset folder, audit manifest or correct manifest."),
    out_dir: Path = typer.Option(..., "--out", help="Model folder (runs go to OUT/<name>/)."),
    stage: str = typer.Option("fine", "--stage", help="coarse (abdomen, 128^3) or fine."),
    target: str = typer.Option("organs", "--target", help="organs or tumor (fine stage)."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: coarse, organs "
                                    "or tumor)."),
    model: str = typer.Option("student", "--model", help="Network preset: student, teacher, "
                              "small, tiny."),
    size: str | None = typer.Option(None, "--size", help="Input size 'D,H,W' or 'N' "
                                    "(default 128 coarse, 192 fine)."),
    epochs: int = typer.Option(500, "--epochs", min=1),
    iterations: int = typer.Option(250, "--iterations", min=1, help="Steps per epoch."),
    batch_size: int = typer.Option(2, "--batch-size", min=1),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (Nesterov 0.99) or adamw."),
    lr: float | None = typer.Option(None, "--lr", help="Initial LR (0.01 sgd, 3e-4 adamw)."),
    schedule: str = typer.Option("poly", "--schedule", help="poly or cosine."),
    warmup_epochs: int | None = typer.Option(None, "--warmup-epochs", min=0),
    l1: float = typer.Option(1.0, "--l1", help="Weight of corrected pseudo-label (CPL) loss."),
    l2: float = typer.Option(0.5, "--l2", help="Weight of pseudo-label (PL) loss."),
    ema_decay: float = typer.Option(0.99, "--ema-decay", help="Mean-teacher EMA decay."),
    mt_weight: float = typer.Option(1.0, "--mt-weight", help="Mean-teacher pseudo-label "
                                    "loss weight."),
    normalization: str = typer.Option("foreground", "--normalization",
                                      help="foreground, window325 or window200."),
    margin_mm: float = typer.Option(10.0, "--margin-mm", help="Fine ROI margin."),
    deep_supervision: bool = typer.Option(False, "--deep-supervision"),
    balanced_ce: bool = typer.Option(False, "--balanced-ce", help="Weight cross-entropy "
                                     "per class by count^-1/2 (small organs learn sooner)."),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    val_fraction: float = typer.Option(0.1, "--val-fraction"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    workers: int | None = typer.Option(None, "--workers", "-j", min=0,
                                       help="Loader workers and preprocessing processes "
                                       "(default 0 on CPU, 4 on CUDA)."),
    cache: Path | None = typer.Option(None, "--cache", help="Preprocessed-array cache folder "
                                      "(default OUT/cache/STAGE)."),
    init: Path | None = typer.Option(None, "--init", help="Start from the weights of this "
                                     "bundle (same preset), e.g. the teacher; its class heads "
                                     "only when the classes match (tumor from organs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/<name> from its last "
                                "checkpoint (other options are read from its config)."),
) -> None:
    """Train a stage of the two-stage model; writes a self-describing run folder + bundle."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from flarecli.core.training import loop as core

    cfg = core.TrainConfig(
        source=str(source), out=str(out_dir), stage=stage, target=target, name=name,
        model=model, size=parse_size(size), epochs=epochs, iterations=iterations,
        batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
        warmup_epochs=warmup_epochs, l1=l1, l2=l2, ema_decay=ema_decay, mt_weight=mt_weight,
        normalization=normalization, margin_mm=margin_mm, deep_supervision=deep_supervision,
        balanced_ce=balanced_ce,
        augment=augment, val_fraction=val_fraction, seed=seed, device=device,
        workers=workers, cache=str(cache) if cache else None,
        init=str(init) if init else None,
    )
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("train", total=None, info="")

        def on_epoch(r: dict) -> None:
            val = f" val Dice {r['val_mean']:.3f}" if "val_mean" in r else ""
            err.print(f"epoch {r['epoch']}: loss {r['loss']:.4f}{val} ({r['seconds']:.1f} s)"
                      f"{' *' if r['best'] else ''}", highlight=False)

        progress = core.Progress(
            stage=lambda text: err.print(text, highlight=False),
            cache=lambda i, n: bar.update(task, description="preprocess", completed=i,
                                          total=n, info=""),
            step=lambda e, s, loss: bar.update(
                task, description=f"epoch {e + 1}/{epochs}", completed=e * iterations + s + 1,
                total=epochs * iterations, info=f"loss {loss:.4f}"),
            epoch=on_epoch,
        )
        result = core.train(cfg, resume=resume, progress=progress)
    score = (f"best validation Dice {result['best']:.4f}" if result["validated"]
             else f"best training loss {-result['best']:.4f}")
    out.print(f"trained {result['epochs']} epochs -> {result['run_dir']} ({score})",
              highlight=False)


def parse_size(text: str | None) -> tuple[int, int, int] | None:
    from flarecli.core.errors import InputError

    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as e:
        raise InputError(f"--size {text}: expected N or D,H,W") from e
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise InputError(f"--size {text}: expected N or D,H,W")
    return values[0], values[1], values[2]
