"""``flare preview``: one PNG per case to glance at a segmentation."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._folder import fail_if_any, note_stray, run_cases
from flarecli.commands._ui import WORKERS, out, problem
from flarecli.core.words import count


def preview(
    labels_dir: Path = typer.Argument(..., help="Folder of label maps (<case>.nii.gz)."),
    images: Path = typer.Argument(..., help="Folder of the CT scans (<case>_0000.nii.gz, or "
                                  "DICOM CT series)."),
    output_dir: Path = typer.Argument(..., help="Folder for the PNGs (<case>.png)."),
    workers: int = WORKERS,
    size: int = typer.Option(400, "--size", min=64, max=4000, help="Pixels for the scan's "
                             "longest side in mm; the three planes share that scale."),
) -> None:
    """Axial, coronal and sagittal planes through the organs' centre: the CT in a
    soft-tissue window, the labels in colour with a legend, tumors outlined, orientation
    letters; square pixels from the spacing.

    A case that cannot be read (or whose image is on another grid) is reported and the
    others drawn; exit code 4 then.
    """
    from flarecli.core.errors import InputError
    from flarecli.core.io.cases import label_files
    from flarecli.core.io.outputs import check_output_dir
    from flarecli.core.preview.render import preview_case

    if not label_files(labels_dir).cases:  # refused before the output folder is made
        raise InputError(f"{labels_dir}: no label maps found")
    check_output_dir(output_dir, "output folder", case_dirs=[labels_dir, images])
    jobs, failed = preview_jobs(labels_dir, images, output_dir)
    jobs = [(*job, size) for job in jobs]
    done = 0
    for job, message in zip(jobs, run_cases(jobs, workers, "preview", each=preview_case),
                            strict=True):
        if message:
            problem(job[0], message)
            failed += 1
        else:
            done += 1
    out.print(f"drew {count(done, 'preview')} into {output_dir}", highlight=False)
    fail_if_any(failed, failed + done)


def preview_jobs(labels_dir: Path, images: Path, output_dir: Path
                 ) -> tuple[list[tuple[str, str, str, str, str | None]], int]:
    """(jobs, cases that cannot be drawn: reported here) of a labels and an images folder."""
    from flarecli.core.io.cases import discover_scans, label_files

    found = label_files(labels_dir)
    scans = discover_scans(images)
    by_id = {c.id: c for c in scans.cases}
    note_stray(found.stray + scans.stray)
    jobs, failed = [], 0
    for case in found.cases:
        scan = by_id.get(case.id)
        problems = case.problems + (scan.problems if scan else [])
        if problems or scan is None or scan.image is None:
            problem(case.id, "; ".join(problems) or "no image")
            failed += 1
            continue
        jobs.append((case.id, str(case.label), str(scan.image),
                     str(Path(output_dir) / f"{case.id}.png"), scan.series_uid))
    return jobs, failed
