"""``flare correct``: pseudo-labels corrected with partial annotations, plus a manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._folder import fail_if_any, note_stray, run_cases
from flarecli.commands._ui import OVERWRITE, WORKERS, note, out, problem, write_json
from flarecli.core.words import count


def correct(
    pseudo_dir: Path = typer.Argument(..., help="Pseudo-labels (flare pseudolabel output)."),
    labels_dir: Path = typer.Argument(..., help="Partial labels (e.g. labelsTr/)."),
    output_dir: Path = typer.Argument(..., help="Folder for the corrected labels."),
    images: list[Path] = typer.Option([], "--images", help="Image folder(s) to find each "
                                      "case's scan (default: pseudolabel's run record)."),
    manifest_path: Path | None = typer.Option(None, "--manifest", dir_okay=False,
                                              help="Manifest path (default OUTPUT/"
                                              "manifest.json)."),
    rule: str = typer.Option("stmt", "--rule", help="stmt (the annotation wins) or "
                             "supplement (seed 004's rule; the same result)."),
    workers: int = WORKERS,
    overwrite: bool = OVERWRITE,
) -> None:
    """Correct teacher pseudo-labels with the partial labels; the annotation always wins.

    Writes the corrected labels and the manifest that flare train consumes (each case FL,
    CPL or PL). Exit code 4 if some cases failed (the others are written).
    """
    from flarecli.core.curation import correct as core
    from flarecli.core.errors import check_choice
    check_choice("--rule", rule, tuple(core.RULES))
    plan = core.plan(pseudo_dir, labels_dir, output_dir, images, overwrite, rule,
                     manifest_path)
    note_stray(plan.stray)
    results = []
    for r in run_cases(plan.jobs, workers, "correct", each=core.correct_case,
                       before=plan.failed):
        if r.error:
            problem(r.case, r.error)
        elif r.redone:
            note(r.label, "its inputs changed since an earlier run wrote it; corrected again")
        results.append(r)
    data = core.manifest(results, {"pseudo": str(Path(pseudo_dir).resolve()),
                                   "labels": str(Path(labels_dir).resolve())})
    write_json(plan.manifest, data)
    s = data["summary"]
    out.print(f"corrected {count(len(results) - len(s['failed']), 'case')} into {output_dir}: "
              f"FL {s['FL']}, CPL {s['CPL']}, PL {s['PL']}", highlight=False)
    fail_if_any(len(s["failed"]), len(results))
