"""The shape every folder command shares (audit, evaluate, stats, postprocess, correct,
preview): check the outputs before any work, note the stray files, run the cases in order
with a progress bar, report each problem on its own line, write the --json/--csv reports,
and end with exit code 4 when some cases failed.

The core plans the jobs and computes each case; this module only renders and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from flarecli.commands._ui import note, track, write_csv, write_json

R = TypeVar("R")


def check_reports(reports: dict[str, Path | None], *, reads: Iterable[Path] = (),
                  case_dirs: Iterable[Path] = ()) -> None:
    """Before any work: each report (option name -> file, None when not asked for) is not
    an input, not among the cases read and writable, and no two name the same file."""
    from flarecli.core.io.outputs import check_distinct, check_output_file

    reads, case_dirs = list(reads), list(case_dirs)
    for what, path in reports.items():
        check_output_file(path, what, reads=reads, case_dirs=case_dirs)
    check_distinct(reports)


def note_stray(stray: Iterable[tuple[Path, str]]) -> None:
    """One note per file the command ignores (no effect on the exit code)."""
    for path, message in stray:
        note(str(path), message)


def run_cases(jobs: list[Any], workers: int, description: str, *,
              each: Callable[[Any], R] | None = None,
              mapper: Callable[[list[Any], int], Iterable[R]] | None = None,
              before: Iterable[R] = ()) -> Iterator[R]:
    """``before`` (results known without running, e.g. cases refused while planning), then
    the result of each job in the jobs' order, with a progress bar on stderr: ``each(job)``
    in ``workers`` processes, or ``mapper(jobs, workers)`` where the core runs them its own
    way."""
    if mapper is None:
        from flarecli.core.parallel import imap_ordered

        results = imap_ordered(each, jobs, workers)
    else:
        results = mapper(jobs, workers)
    return chain(before, track(results, len(jobs), description))


def write_reports(*reports: tuple[str, Path | None, Callable[[], Any]]) -> None:
    """Write each report asked for, in the order given: (``"json"`` or ``"csv"``, file or
    None, a function giving the JSON data or the CSV's (header, rows))."""
    for kind, path, make in reports:
        if path is None:
            continue
        if kind == "json":
            write_json(path, make())
        else:
            write_csv(path, *make())


def fail_if_any(failed: int, total: int, what: str = "cases") -> None:
    """Exit code 4 (CasesFailed) when some of the cases had problems; each was reported."""
    from flarecli.core.errors import CasesFailed

    if failed:
        raise CasesFailed(failed, total, what)
