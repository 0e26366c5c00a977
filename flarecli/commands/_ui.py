"""Shared console, progress bar, tables and option definitions for the commands.

Results go to stdout (``out``); progress and diagnostics to stderr (``err``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from flarecli.core.labels import MIN_TUMOR_MM3 as MIN_TUMOR_MM3_DEFAULT

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WORKERS = typer.Option(1, "--workers", "-j", min=1, help="Parallel worker processes.")
OVERWRITE = typer.Option(False, "--overwrite", help="Redo existing outputs.")
MIN_TUMOR_MM3 = typer.Option(MIN_TUMOR_MM3_DEFAULT, "--min-tumor-mm3", help="Smallest tumor "
                             "component kept (mm^3): smaller ones are dropped, and are no "
                             "lesion.")
JSON_OUT = typer.Option(None, "--json", help="Write the machine-readable result here.",
                        dir_okay=False)
CSV_OUT = typer.Option(None, "--csv", help="Write the per-case table here.", dir_okay=False)
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N.")
BACKEND = typer.Option("auto", "--backend", help="auto, torch or openvino: auto takes "
                       "OpenVINO on the CPU when installed, torch on CUDA.")
PRECISION = typer.Option("auto", "--precision", help="auto (the backend's fast default: "
                         "bf16 on CPUs that have it), f32, or int8 (OpenVINO; needs "
                         "--calibration).")
CALIBRATION = typer.Option(None, "--calibration", file_okay=False, help="A folder of a few "
                           "training scans that calibrate --precision int8 (8 is plenty).")
CACHE_DIR = typer.Option(None, "--cache-dir", help="Where compiled "
                         "OpenVINO models are kept (default: $XDG_CACHE_HOME/flare).")
SCANS = typer.Argument(..., help="Folder of CT scans: <case>_0000.nii.gz files, or DICOM CT "
                       "series (in sub-folders, or the series folder itself).")
TTA = typer.Option(False, "--tta", help="Average softmax over the mirror views each stage was "
                   "trained on.")
SHARD = typer.Option(None, "--shard", help="I/N: only the I-th of N disjoint shares of the "
                     "cases (1 <= I <= N; stable as cases are added), for job arrays.")
RECIPE = typer.Option("stmt", "--recipe", help="A built-in recipe (flare recipes) or a "
                      "recipe file.")
PRESET = typer.Option(None, "--preset", help="A preset of the recipe (default: its own "
                      "default, e.g. paper).")
SET = typer.Option([], "--set", help="Change a recipe field: KEY=VALUE with a dotted key "
                   "(repeatable), e.g. stages.organs.epochs=50.")


class Advance:
    """What :func:`progress_bar` yields: call it to advance; ``describe`` says what the run
    is doing meanwhile (the bar's label)."""

    def __init__(self, progress: Progress, task) -> None:
        self._progress, self._task = progress, task

    def __call__(self) -> None:
        self._progress.advance(self._task)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Advance]:
    """A progress bar on stderr (hidden when stderr is not a terminal); yields ``advance``."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield Advance(progress, task)


@contextlib.contextmanager
def steps(description: str, total: int) -> Iterator[Callable[[], None]]:
    """Progress of ``total`` items after the main work (previews, statistics): a bar in a
    terminal; elsewhere (a log file, a pipe) a line when it starts and one when it ends, so
    that a silent 20 s is not taken for a hang. Yields ``advance``."""
    import time

    if not err.is_terminal:
        err.print(f"{description}: {total} ...", highlight=False)
    t0 = time.perf_counter()
    with progress_bar(total, description) as advance:
        yield advance
    if not err.is_terminal:
        err.print(f"{description}: done in {time.perf_counter() - t0:.1f} s", highlight=False)


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Iterate with a progress bar on stderr (hidden when stderr is not a terminal)."""
    with progress_bar(total, description) as advance:
        for item in items:
            yield item
            advance()


def problem(where: str, message: str) -> None:
    """One line per problem, on stderr, naming the file or case (the run ends with exit
    code 4)."""
    err.print(f"[red]error[/red]: {escape(where)}: {escape(message)}", markup=True,
              highlight=False)


def note(where: str, message: str) -> None:
    """One line about something ignored, on stderr (no effect on the exit code)."""
    err.print(f"[yellow]note[/yellow]: {escape(where)}: {escape(message)}", markup=True,
              highlight=False)


def write_json(path: Path, data: Any) -> None:
    from flarecli.core.io.files import write_text_atomic

    write_text_atomic(Path(path), json.dumps(data, indent=2) + "\n")
    err.print(f"wrote {path}", highlight=False)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from flarecli.core.io.files import write_text_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(Path(path), buf.getvalue())
    err.print(f"wrote {path}", highlight=False)
