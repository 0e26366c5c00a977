"""``flare audit``: what each case annotates, and every integrity problem."""

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


def audit(
    dataset: Path | None = typer.Argument(
        None, help="Dataset folder (imagesTr/ + labelsTr/, optional imagesUn/)."
    ),
    images: Path | None = typer.Option(None, "--images", help="Images folder (instead of "
                                       "DATASET)."),
    labels: Path | None = typer.Option(None, "--labels", help="Labels folder for --images."),
    json_path: Path | None = JSON_OUT,
    csv_path: Path | None = CSV_OUT,
    workers: int = WORKERS,
) -> None:
    """Audit a dataset: label patterns, organ full/partial/none, tumor, integrity problems.

    Exit code 4 when any problem was found (each is printed on its own line; the audit still
    covers every case). --json writes the manifest later commands consume.
    """
    from flarecli.core.curation import audit as core

    found, folders, source, reads = _inputs(dataset, images, labels)
    check_reports({"--json": json_path, "--csv": csv_path}, reads=reads, case_dirs=folders)
    if dataset is not None:
        _not_over_dataset_files(dataset, {"--json": json_path, "--csv": csv_path})
    note_stray(found.stray)
    for path, message in found.problems:
        problem(str(path), message)
    cases = []
    for result in run_cases(found.cases, workers, "audit", each=core.audit_case):
        for message in result.problems:
            problem(result.id, message)
        for message in result.notes:
            note(result.id, message)
        cases.append(result)
    data = core.manifest(cases, found, source)
    render_summary(data["summary"])
    write_reports(("json", json_path, lambda: data),
                  ("csv", csv_path, lambda: (core.CSV_COLUMNS, core.csv_rows(cases))))
    fail_if_any(data["summary"]["problems"], len(cases) + len(found.problems), "cases/files")


def _inputs(dataset: Path | None, images: Path | None, labels: Path | None):
    """(cases found, folders of cases, the manifest's source, files read) of the input."""
    from flarecli.core.curation import audit as core
    from flarecli.core.errors import InputError
    from flarecli.core.io.cases import discover_cases

    if dataset is not None and (images is not None or labels is not None):
        raise InputError("give either DATASET or --images/--labels, not both")
    if dataset is not None:
        found = core.dataset_cases(dataset)
        # every folder of a dataset holds cases (imagesTs, labelsFull, ... too), and its
        # dataset.json is read: a report goes beside them, never among or over them
        folders = [p for p in Path(dataset).iterdir() if p.is_dir()]
        source = {"dataset": str(Path(dataset).resolve())}
    elif images is not None or labels is not None:
        found = discover_cases(images, labels)
        folders = [f for f in (images, labels) if f is not None]
        source = {"images": str(images.resolve()) if images else None,
                  "labels": str(labels.resolve()) if labels else None}
    else:
        raise InputError("no input", hint="flare audit DATASET, or --images DIR --labels DIR")
    if not found.cases and not found.stray:
        raise InputError(f"no NIfTI files found in {source}")
    reads = [f for c in found.cases for f in (c.image, c.label) if f is not None]
    if dataset is not None:
        reads.append(Path(dataset) / "dataset.json")
    return found, folders, source, reads

def _not_over_dataset_files(dataset: Path, reports: dict[str, Path | None]) -> None:
    """A report beside a dataset's folders is fine (``DATASET/audit.json``), and so is one
    replacing an earlier audit report there; any other file of the dataset's own (the
    ``synth.json`` of ``flare synth``, a README) is not the audit's to replace."""
    import csv
    import json

    from flarecli.core.curation import audit as core
    from flarecli.core.errors import InputError

    for what, path in reports.items():
        if path is None or not path.is_file() or \
                path.resolve().parent != Path(dataset).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
            if what == "--json":
                data = json.loads(text)
                ours = isinstance(data, dict) and {"schema_version", "cases",
                                                   "summary"} <= set(data)
            else:
                ours = next(csv.reader(text.splitlines()), None) == list(core.CSV_COLUMNS)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            ours = False
        if not ours:
            raise InputError(f"{path}: {what} would replace a file of the dataset {dataset} "
                             "that is no audit report",
                             hint="choose another name: flare never writes over a dataset's "
                             "own files")


def render_summary(summary: dict) -> None:
    from rich.table import Table

    from flarecli.core.labels import LABELS

    # one row per count: nine columns cut their headers to "label…" in 80 columns
    t = Table(title="cases")
    t.add_column("")
    t.add_column("cases", justify="right")
    for key in ("cases", "labeled", "unlabeled", "organ_full", "organ_partial", "organ_none",
                "tumor", "no_tumor", "problems"):
        t.add_row("all" if key == "cases" else key.replace("_", " "), str(summary[key]))
    out.print(t)

    g = Table(title="label patterns")
    g.add_column("pattern")
    g.add_column("cases", justify="right")
    for name, n in summary["groups"].items():
        g.add_row(name, str(n))
    h = Table(title="annotated classes per labeled case")
    h.add_column("classes", justify="right")
    h.add_column("cases", justify="right")
    for k, n in summary["n_classes_histogram"].items():
        h.add_row(k, str(n))
    c = Table(title="labeled cases per class")
    c.add_column("id", justify="right")
    c.add_column("class")
    c.add_column("cases", justify="right")
    for k, n in summary["cases_per_class"].items():
        c.add_row(k, LABELS[int(k)], str(n))
    out.print(g)
    out.print(h)
    out.print(c)
