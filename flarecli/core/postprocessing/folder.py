"""Folder-level driver of the post-processing (reading, writing, resume)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flarecli.core.errors import FlareError, InputError
from flarecli.core.io.cases import check_output_dir, label_files, require_dir
from flarecli.core.io.nifti import write_volume
from flarecli.core.postprocessing.components import postprocess, structure


@dataclass(frozen=True)
class Job:
    case: str
    source: Path
    target: Path
    connectivity: int
    min_tumor_mm3: float
    overwrite: bool


@dataclass
class Result:
    case: str
    removed: dict[int, int] = field(default_factory=dict)
    skipped: bool = False
    error: str | None = None


def plan(input_dir: Path, output_dir: Path, connectivity: int, min_tumor_mm3: float,
         overwrite: bool) -> list[Job]:
    input_dir = require_dir(input_dir, "input")
    structure(connectivity)  # validates
    if min_tumor_mm3 < 0:
        raise InputError(f"--min-tumor-mm3 {min_tumor_mm3}: must be >= 0")
    check_output_dir(output_dir, input_dir)
    found = label_files(input_dir)
    if not found.cases:
        raise InputError(f"{input_dir}: no NIfTI label maps found")
    return [Job(c.id, c.label, Path(output_dir) / f"{c.id}.nii.gz", connectivity, min_tumor_mm3,
                overwrite) for c in found.cases if c.label is not None]


def run_case(job: Job) -> Result:
    from flarecli.core.io.nifti import read_label_map

    if job.target.exists() and not job.overwrite:
        return Result(job.case, skipped=True)
    try:
        labels, geometry = read_label_map(job.source)
        cleaned, removed = postprocess(labels, geometry.voxel_volume_mm3, job.connectivity,
                                       job.min_tumor_mm3)
        write_volume(job.target, cleaned, geometry)
        return Result(job.case, removed=removed)
    except FlareError as e:
        return Result(job.case, error=str(e))
