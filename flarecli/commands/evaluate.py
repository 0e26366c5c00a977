"""``flare evaluate``: FLARE-exact DSC and NSD per case and class."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._folder import (
    check_reports,
    fail_if_any,
    note_stray,
    run_cases,
    write_reports,
)
from flarecli.commands._ui import CSV_OUT, JSON_OUT, WORKERS, note, out, problem
from flarecli.core.labels import MIN_TUMOR_MM3
from flarecli.core.words import count


def evaluate(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted label maps (<case>.nii.gz)."),
    gt_dir: Path = typer.Argument(..., help="Folder of ground-truth label maps."),
    protocol: str = typer.Option(
        "exact", "--protocol",
        help="exact: inclusive GT slice range along the true S-I axis; flare23: the official "
        "script, off-by-one and 4-decimal rounding included.",
    ),
    nsd_threshold: float = typer.Option(
        0.2, "--nsd-threshold", help="NSD = 0 when DSC is below this (official: 0.2; 0.1 "
        "before 2024)."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Audit manifest of GT_DIR: score only annotated classes.",
        dir_okay=False,
    ),
    min_lesion_mm3: float = typer.Option(
        MIN_TUMOR_MM3, "--min-lesion-mm3", help="Lesion-wise figures: smaller tumor components are "
        "ignored in truth and prediction (default as postprocess)."
    ),
    json_path: Path | None = JSON_OUT,
    csv_path: Path | None = CSV_OUT,
    workers: int = WORKERS,
) -> None:
    """Score predictions against ground truth: DSC and NSD per case and class (1..14), and
    lesion-wise detection of tumors (class 14).

    A GT case without prediction is scored as an empty prediction. A case whose files are
    unreadable or on another grid is reported and left out; exit code 4 then.
    """
    from flarecli.core.curation.audit import read_manifest
    from flarecli.core.errors import check_choice
    from flarecli.core.io.cases import require_dir
    from flarecli.core.metrics import evaluate as core

    check_choice("protocol", protocol, core.PROTOCOLS)
    require_dir(pred_dir, "predictions")
    require_dir(gt_dir, "ground-truth")
    reads = [p for folder in (pred_dir, gt_dir) for p in Path(folder).iterdir()]
    check_reports({"--json": json_path, "--csv": csv_path}, case_dirs=[pred_dir, gt_dir],
                  reads=reads + ([manifest] if manifest else []))
    man = read_manifest(manifest) if manifest else None
    plan = core.plan_jobs(pred_dir, gt_dir, protocol, nsd_threshold, man, min_lesion_mm3)
    results = _score(plan, workers)
    if man is None:
        note_partial_truth(core.predicted_beyond_truth(results))
    summary = core.summarize(results, protocol, nsd_threshold, min_lesion_mm3)
    render(summary)
    write_reports(("csv", csv_path, lambda: (core.CSV_COLUMNS, core.csv_rows(results))),
                  ("json", json_path, lambda: summary))
    fail_if_any(len(summary["failed_cases"]), len(results))


def _score(plan, workers: int) -> list:
    """Every case's result, sorted by case id; notes and problems reported on the way."""
    from flarecli.core.metrics import evaluate as core

    note_stray(plan.stray)
    for case in plan.extra:
        note(case, "prediction has no ground truth (ignored)")
    results = []
    for r in run_cases(plan.jobs, workers, "evaluate", mapper=core.evaluate_cases,
                       before=plan.failed):
        if r.missing_prediction:
            note(r.case, "no prediction, scored as empty")
        for message in r.problems:
            problem(r.case, message)
        for message in r.notes:
            note(r.case, message)
        results.append(r)
    return sorted(results, key=lambda r: r.case)


def note_partial_truth(beyond: list[tuple[int, int, bool]]) -> None:
    """One note for the whole run: classes predicted where the GT case has none."""
    from flarecli.core.labels import label_name

    if not beyond:
        return
    names = ", ".join(f"{label_name(c)} ({n} case{'s' if n > 1 else ''}"
                      + ("" if anywhere else ", in no ground-truth case") + ")"
                      for c, n, anywhere in beyond)
    note("ground truth", f"predicted classes the truth case lacks score 0 there (the official "
         f"rule): {names}; if the truth does not annotate them, pass --manifest (the truth's "
         "audit manifest, from flare audit --json) to score only what it annotates")


def render(summary: dict) -> None:
    from rich.table import Table

    def f(v):
        return "-" if v is None else f"{v:.4f}"

    t = Table(title=f"FLARE scores ({count(summary['scored_cases'], 'case')}, protocol "
              f"{summary['protocol']})", caption=lesion_line(summary.get("lesions")))
    for col in ("id", "class", "DSC", "std", "NSD", "std", "n"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for k, e in summary["per_class"].items():
        t.add_row(k, e["name"], f(e["dsc"]), f(e["dsc_std"]), f(e["nsd"]), f(e["nsd_std"]),
                  str(e["n"]))
    t.add_section()
    t.add_row("", f"organs (mean of {summary['organ_classes']})", f(summary["organ_dsc"]), "",
              f(summary["organ_nsd"]), "", "")
    t.add_row("", "tumor", f(summary["tumor_dsc"]), "", f(summary["tumor_nsd"]), "", "")
    out.print(t)


def lesion_line(lesions: dict | None) -> str | None:
    """The lesion-wise summary in one line (None without a case scored for lesions)."""
    if not lesions or not lesions["cases"]:
        return None

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    return (f"tumor lesions (>= {lesions['min_lesion_mm3']:g} mm3): {lesions['detected']} of "
            f"{lesions['true_lesions']} found, sensitivity {f(lesions['sensitivity'])} (>= 1 ml "
            f"{f(lesions['sensitivity_1ml_or_more'])}), {f(lesions['fp_per_case'])} FP/case, "
            f"F1 {f(lesions['f1'])}")
