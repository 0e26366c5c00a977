"""``flare stats``: organ volumes and HU, tumor lesions with RECIST axes, per case."""

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
from flarecli.commands._ui import CSV_OUT, JSON_OUT, MIN_TUMOR_MM3, WORKERS, note, out, problem
from flarecli.core.words import count


def stats(
    labels_dir: Path = typer.Argument(..., help="Folder of label maps (<case>.nii.gz)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the CT scans "
                                       "(<case>_0000.nii.gz, or DICOM CT series): adds HU "
                                       "statistics."),
    json_path: Path | None = JSON_OUT,
    csv_path: Path | None = CSV_OUT,
    min_tumor_mm3: float = MIN_TUMOR_MM3,
    workers: int = WORKERS,
) -> None:
    """Per case and class: voxels, volume (ml), HU statistics with --images; per tumor
    lesion: volume, RECIST long and short axis (mm), centroid (world mm), the organ it lies
    in; per case: lesion count, tumor burden, sum of long axes.

    A case that cannot be read (or whose image is on another grid) is reported and left out;
    exit code 4 then.
    """
    from flarecli.core.errors import InputError, check_volume
    from flarecli.core.io.cases import discover_cases, discover_scans, require_dir
    from flarecli.core.quantification import stats as core

    require_dir(labels_dir, "labels")
    check_volume("--min-tumor-mm3", min_tumor_mm3)
    found = discover_cases(None, labels_dir)
    by_image = {c.id: c for c in discover_scans(images).cases} if images else {}
    folders = [labels_dir] + ([images] if images else [])
    check_reports({"--json": json_path, "--csv": csv_path}, case_dirs=folders,
                  reads=[p for folder in folders for p in Path(folder).iterdir()])
    note_stray(found.stray)
    jobs, failed = _jobs(found.cases, by_image, images is not None, min_tumor_mm3)
    if not jobs and not failed:
        raise InputError(f"{labels_dir}: no label maps found")
    results = []
    for job, (result, problems) in zip(jobs, run_cases(jobs, workers, "stats",
                                                       each=core.stats_case), strict=True):
        for message in problems:
            problem(job.case, message)
        if result is None:
            failed += 1
        else:
            results.append(result)
    render(results)
    write_reports(("csv", csv_path, lambda: core.csv_rows(results)),
                  ("json", json_path, lambda: core.stats_json(results, min_tumor_mm3)))
    fail_if_any(failed, failed + len(results))


def _jobs(cases, by_image: dict, with_images: bool, min_tumor_mm3: float):
    """(a StatsJob per usable case, how many cases were refused: each reported here)."""
    from flarecli.core.quantification import stats as core

    jobs, failed = [], 0
    for case in cases:
        if case.problems:
            problem(case.id, "; ".join(case.problems))
            failed += 1
            continue
        image = by_image.get(case.id)
        if image is not None and image.problems:  # a scan that cannot be read (DICOM)
            problem(case.id, "; ".join(image.problems))
            failed += 1
            continue
        if with_images and (image is None or image.image is None):
            note(case.id, "no image, so no HU statistics")
        jobs.append(core.StatsJob(case.id, str(case.label), str(image.image) if image and
                                  image.image else None, min_tumor_mm3,
                                  image.series_uid if image else None))
    return jobs, failed

def render(cases) -> None:
    from rich.table import Table

    from flarecli.core.labels import TUMOR

    t = Table(title=f"statistics of {count(len(cases), 'case')}")
    for col in ("case", "classes", "liver ml", "tumor ml", "lesions", "sum of long axes mm"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for c in cases:
        liver = c.classes.get(1)  # FLARE id 1: the liver
        tumor = c.classes.get(TUMOR)
        t.add_row(c.id, str(len(c.classes)), f"{liver.volume_ml:.1f}" if liver else "-",
                  f"{tumor.volume_ml:.2f}" if tumor else "-", str(c.lesion_count),
                  f"{c.sum_long_axes_mm:.1f}")
    out.print(t)
