"""What ``infer`` and ``pseudolabel`` share: the input folder, the run, its rendering."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flarecli.commands._folder import fail_if_any, note_stray
from flarecli.commands._ui import err, note, problem, progress_bar

if TYPE_CHECKING:  # the core loads inside the command, so that --help stays light
    from flarecli.core.inference.folder import PredictRun
    from flarecli.core.inference.record import ScanResult


def predict_folder(input_dir: Path, run: PredictRun,
                   reports: dict[str, Path | None] | None = None
                   ) -> tuple[list[ScanResult], dict[str, Any]]:
    """Predict every scan of ``input_dir`` (core.inference.folder.predict); prints notes and
    problems. ``reports``: option name -> file the command writes after the run (checked
    before any work). The caller raises CasesFailed after the loop if any scan failed."""
    from flarecli.core.inference.folder import input_cases, predict
    from flarecli.core.io.cases import require_dir
    from flarecli.core.io.outputs import check_distinct, check_output_dir, check_output_file

    require_dir(input_dir, "input")
    inputs = [input_dir, run.model] + ([run.calibration] if run.calibration else [])
    if run.calibration is not None:  # scans that are read, never written into
        check_output_dir(run.output_dir, "output folder", case_dirs=inputs)
    cases, found = input_cases(input_dir, run.output_dir, run.model)
    reads = [c.image for c in cases]
    for what, path in (reports or {}).items():
        check_output_file(path, what, reads=reads, case_dirs=inputs)
    check_distinct({**(reports or {}), "the run record": Path(run.output_dir) / run.record_name})
    if run.cache_dir is not None:
        check_output_dir(run.cache_dir, "--cache-dir", case_dirs=inputs)
    note_stray(found.stray)
    with progress_bar(len(cases), run.command) as advance:
        def on_result(r: ScanResult) -> None:
            if r.error:
                problem(r.case, r.error)
            elif r.geometry_note:
                note(r.case, r.geometry_note)
            advance()

        return predict(run, cases, str(Path(input_dir).resolve()),
                       notes=lambda text: err.print(text, highlight=False, markup=False),
                       on_result=on_result, on_step=advance.describe)


def finish(results: list[ScanResult], what: str = "scans") -> None:
    """Exit code 4 when some scans failed (each was reported as it came)."""
    fail_if_any(sum(1 for r in results if r.error), len(results), what)
