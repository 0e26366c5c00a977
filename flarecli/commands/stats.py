"""``flare stats``: organ volumes and HU, tumor lesions with RECIST axes, per case."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._ui import CSV_OUT, JSON_OUT, WORKERS, note, out, problem, track
from flarecli.core.words import count


def stats(
    labels_dir: Path = typer.Argument(..., help="Folder of label maps (<case>.nii.gz)."),
    images: Path | None = typer.Option(None, "--images", help="Folder of the CT scans "
                                       "(<case>_0000.nii.gz, or DICOM CT series): adds HU "
                                       "statistics."),
    json_path: Path | None = JSON_OUT,
    csv_path: Path | None = CSV_OUT,
    min_tumor_mm3: float = typer.Option(100.0, "--min-tumor-mm3", help="Smallest lesion "
                                        "counted (mm^3)."),
    workers: int = WORKERS,
) -> None:
    """Per case and class: voxels, volume (ml), HU statistics with --images; per tumor
    lesion: volume, RECIST long and short axis (mm), centroid (world mm), the organ it lies
    in; per case: lesion count, tumor burden, sum of long axes.

    A case that cannot be read (or whose image is on another grid) is reported and left out;
    exit code 4 then.
    """
    from flarecli.commands._ui import write_csv, write_json
    from flarecli.core.errors import CasesFailed, InputError
    from flarecli.core.io.cases import discover_cases, discover_scans, require_dir
    from flarecli.core.io.outputs import check_distinct, check_output_file
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.quantification import stats as core

    require_dir(labels_dir, "labels")
    if min_tumor_mm3 < 0:
        raise InputError(f"--min-tumor-mm3 {min_tumor_mm3}: must be >= 0")
    found = discover_cases(None, labels_dir)
    by_image = {c.id: c for c in discover_scans(images).cases} if images else {}
    folders = [labels_dir] + ([images] if images else [])
    reads = [p for folder in folders for p in Path(folder).iterdir()]
    for path, what in ((json_path, "--json"), (csv_path, "--csv")):
        check_output_file(path, what, reads=reads, case_dirs=folders)
    check_distinct({"--json": json_path, "--csv": csv_path})
    for path, message in found.stray:
        note(str(path), message)
    jobs, failed = [], 0
    for case in found.cases:
        if case.problems:
            problem(case.id, "; ".join(case.problems))
            failed += 1
            continue
        image = by_image.get(case.id)
        if images is not None and (image is None or image.image is None):
            note(case.id, "no image, so no HU statistics")
        jobs.append(core.StatsJob(case.id, str(case.label), str(image.image) if image and
                                  image.image else None, min_tumor_mm3,
                                  image.series_uid if image else None))
    if not jobs and not failed:
        raise InputError(f"{labels_dir}: no label maps found")
    results = []
    for job, (result, problems) in zip(jobs, track(imap_ordered(core.stats_case, jobs, workers),
                                                   len(jobs), "stats"), strict=True):
        for message in problems:
            problem(job.case, message)
        if result is None:
            failed += 1
        else:
            results.append(result)
    render(results)
    if csv_path:
        write_csv(csv_path, *core.csv_rows(results))
    if json_path:
        write_json(json_path, core.stats_json(results, min_tumor_mm3))
    if failed:
        raise CasesFailed(failed, failed + len(results))


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
