"""Folder-level driver of the post-processing (reading, writing, resume).

The output folder holds ``postprocess.json``, the settings its label maps were cleaned with
and the folder they were read from (written before the first of them): a re-run keeps the
maps already there, so it refuses other settings or another input folder unless
``--overwrite``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from flarecli.core.errors import DiskFull, FlareError, InputError, check_volume
from flarecli.core.io.cases import label_files, require_dir
from flarecli.core.io.files import remove_stale_parts, write_text_atomic
from flarecli.core.io.nifti import write_volume
from flarecli.core.io.outputs import (
    check_made_alike,
    check_ours,
    check_output_dir,
    has_ledger,
    note_written,
)
from flarecli.core.postprocessing.components import postprocess
from flarecli.core.preprocessing.connected import structure

#: The record of the settings an output folder's label maps were cleaned with.
RECORD = "postprocess.json"


@dataclass(frozen=True)
class PostprocessJob:
    case: str
    source: Path
    target: Path
    connectivity: int
    min_tumor_mm3: float
    overwrite: bool


@dataclass
class PostprocessResult:
    case: str
    removed: dict[int, int] = field(default_factory=dict)
    skipped: bool = False
    error: str | None = None
    redone: bool = False  # a kept output predated its input, and was computed again


@dataclass
class PostprocessPlan:
    jobs: list[PostprocessJob]
    stray: list[tuple[Path, str]]  # ignored files
    failed: list[PostprocessResult]  # cases that cannot be processed (a duplicate file)


def plan(input_dir: Path, output_dir: Path, connectivity: int, min_tumor_mm3: float,
         overwrite: bool) -> PostprocessPlan:
    input_dir = require_dir(input_dir, "input")
    structure(connectivity)  # validates
    check_volume("--min-tumor-mm3", min_tumor_mm3)
    found = label_files(input_dir)
    if not found.cases:
        raise InputError(f"{input_dir}: no NIfTI label maps found")
    check_output_dir(output_dir, "output folder", case_dirs=[input_dir])
    # the input folder is part of what made the outputs: another folder's maps under the
    # same names were kept as "existing" (a date can agree by chance)
    settings = {"connectivity": connectivity, "min_tumor_mm3": float(min_tumor_mm3),
                "input": str(input_dir.resolve())}
    if not overwrite:
        check_made_alike(Path(output_dir) / RECORD, settings)
    jobs = [PostprocessJob(c.id, c.label, Path(output_dir) / f"{c.id}.nii.gz", connectivity,
                min_tumor_mm3, overwrite) for c in found.cases
            if c.label is not None and not c.problems]
    # a folder from before the ledger: its label maps are those postprocess.json was written for
    older = ([p.name for p in Path(output_dir).glob("*.nii*")]
             if (Path(output_dir) / RECORD).is_file() and not has_ledger(output_dir) else [])
    check_ours(Path(output_dir), "postprocess", [j.target for j in jobs], older)
    remove_stale_parts(output_dir)
    write_text_atomic(Path(output_dir) / RECORD, json.dumps(settings, indent=2) + "\n")
    failed = [PostprocessResult(c.id, error="; ".join(c.problems))
              for c in found.cases if c.problems]
    return PostprocessPlan(jobs, found.stray, failed)


def run_case(job: PostprocessJob) -> PostprocessResult:
    """Clean one label map; a problem is the case's error, except a full disk, which stops
    the run (every later write would fail too)."""
    from flarecli.core.io.files import kept, newer_source
    from flarecli.core.io.nifti import read_label_map

    changed = newer_source(job.target, job.source)
    if kept(job.target, job.overwrite) and not changed:
        return PostprocessResult(job.case, skipped=True)
    try:
        labels, geometry = read_label_map(job.source)
        cleaned, removed = postprocess(labels, geometry.voxel_volume_mm3, job.connectivity,
                                       job.min_tumor_mm3)
        note_written(job.target, "postprocess")
        write_volume(job.target, cleaned, geometry)
        return PostprocessResult(job.case, removed=removed,
                                 redone=changed and not job.overwrite)
    except DiskFull:
        raise
    except FlareError as e:
        return PostprocessResult(job.case, error=str(e))
