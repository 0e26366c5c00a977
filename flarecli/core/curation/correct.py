"""``flare correct``: teacher pseudo-labels corrected with the partial annotations (StMt).

For a case with a partial label, A = the classes it annotates. Pseudo-label voxels whose
class is in A become background (the annotation says where those classes are), then every
annotated voxel is written over the result: the real annotation always wins, tumor included.
Seed 004's "supplement" rule (keep the annotation; fill a class the annotation lacks from the
pseudo-label, only on annotated background) gives the same map (tested).

Each case gets a training kind for ``flare train --stage fine``:
FL (the label already has all 13 organs; used as is), CPL (corrected pseudo-label),
PL (pseudo-label of a scan without annotation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import DataError, DiskFull, FlareError, InputError
from flarecli.core.io.cases import absolute, discover_cases, label_files, require_dir
from flarecli.core.io.files import kept, remove_stale_parts
from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import read_header, read_label_map, write_volume
from flarecli.core.io.outputs import (
    check_ours,
    check_output_dir,
    check_output_file,
    note_written,
)
from flarecli.core.labels import CLASSES, KINDS, ORGANS
from flarecli.core.preprocessing.boxes import label_counts

MANIFEST_SCHEMA = "flare-correct"


def annotated_classes(partial: np.ndarray) -> list[int]:
    counts = label_counts(partial, minlength=256)
    return [c for c in CLASSES if counts[c] > 0]


def correct(pseudo: np.ndarray, partial: np.ndarray) -> np.ndarray:
    """StMt's correction of a pseudo-label (uint8 arrays, same shape)."""
    annotated = annotated_classes(partial)
    out = pseudo.copy()
    out[np.isin(out, annotated)] = 0
    mask = partial > 0
    out[mask] = partial[mask]
    return out


def supplement(partial: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Seed 004's rule, for comparison: annotation kept, missing classes filled from the
    pseudo-label where the annotation is background."""
    annotated = annotated_classes(partial)
    out = partial.copy()
    fill = (partial == 0) & ~np.isin(pseudo, annotated)
    out[fill] = pseudo[fill]
    return out


#: Correction rules by name: (pseudo-label, partial label) -> corrected label. 'none' keeps
#: the pseudo-label as it is: seed 003 counts every scan without complete labels as
#: unlabeled, its partial annotation unused.
RULES = {"stmt": correct, "supplement": lambda pseudo, partial: supplement(partial, pseudo),
         "none": lambda pseudo, partial: pseudo}


@dataclass(frozen=True)
class CorrectJob:
    case: str
    image: str | None
    pseudo: str | None
    label: str | None
    target: str
    overwrite: bool
    rule: str = "stmt"
    passthrough: bool = False  # not to be corrected: its label is used as it is


@dataclass
class CorrectResult:
    case: str
    image: str | None
    label: str
    kind: str | None = None
    annotated: list[int] = field(default_factory=list)
    from_teacher: list[int] = field(default_factory=list)
    error: str | None = None
    redone: bool = False  # an output kept from an earlier run was stale, and written anew

    def to_json(self) -> dict[str, Any]:
        return {"id": self.case, "image": self.image, "label": self.label, "kind": self.kind,
                "annotated": self.annotated, "from_teacher": self.from_teacher}


def image_grid(image: str | Path) -> Geometry:
    """The grid of a case's scan: a NIfTI header, or the one DICOM series of a folder."""
    path = Path(image)
    if not path.is_dir():
        return read_header(path)
    from flarecli.core.io.dicom import find_series, read_series

    series, _ = find_series(path)
    if len(series) != 1:
        raise DataError(f"{path}: {len(series)} DICOM series, so the scan of this case is "
                        "not known")
    return read_series(path, series[0].uid)[1]


def check_grids(grids: list[tuple[str, Geometry | None]]) -> None:
    """Every grid must be the first one (the scan's), exactly as audit compares an image
    and its label: size, spacing, origin and direction. Raises DataError 'X vs image ...'."""
    (_, reference), *others = grids
    for what, grid in others:
        if grid is not None and reference is not None:
            mismatch = grid.mismatches(reference)  # "X vs image": X's values first
            if mismatch:
                raise DataError(f"{what} vs image " + "; ".join(mismatch))


def _stale(target: Path, out: np.ndarray, geometry: Geometry | None) -> bool:
    """Whether an output an earlier run left is not what these inputs give: a re-run after
    a pseudo-label or an annotation changed must not keep the old file under a manifest
    that describes the new one."""
    try:
        kept_labels, kept_geometry = read_label_map(target, "corrected label")
    except FlareError:
        return True
    if geometry is not None and geometry.mismatches(kept_geometry):
        return True
    return not np.array_equal(kept_labels, out)  # False for another shape too


def correct_case(job: CorrectJob) -> CorrectResult:
    """Correct one case (its pseudo-label, partial label and scan must share one grid);
    problems go to the result's ``error``, a full disk is raised."""
    result = CorrectResult(job.case, job.image, job.target)
    try:
        if job.image is None:
            raise InputError("no image found for this case (give --images DIR)")
        partial = geometry = None
        if job.label is not None:
            partial, geometry = read_label_map(job.label, "partial label")
            result.annotated = annotated_classes(partial)
        scan = None if job.passthrough else image_grid(job.image)
        check_grids([("image", scan), ("partial label", geometry)])
        full_organs = set(ORGANS) <= set(result.annotated)
        if job.passthrough and not full_organs:
            if partial is None:
                raise InputError("a case kept as it is needs a label")
            result.kind, result.label = "partial", absolute(job.label)
            return result  # the annotation as it is, nothing written
        if full_organs:
            result.kind, out = "FL", partial
        elif job.pseudo is None:
            raise InputError("partially labelled case without a pseudo-label")
        else:
            pseudo, pseudo_geometry = read_label_map(job.pseudo, "pseudo-label")
            check_grids([("image", scan), ("pseudo-label", pseudo_geometry)])
            geometry = pseudo_geometry
            if result.annotated and job.rule != "none":
                result.kind, out = "CPL", RULES[job.rule](pseudo, partial)
            else:
                result.kind, out, result.annotated = "PL", pseudo, []
        present = annotated_classes(out)
        result.from_teacher = [c for c in present if c not in result.annotated]
        whole = kept(Path(job.target), job.overwrite)
        if not whole or _stale(Path(job.target), out, geometry):
            result.redone = whole  # a damaged or cut one is simply written again
            note_written(Path(job.target), "correct")
            write_volume(Path(job.target), out, geometry)
    except DiskFull:
        raise  # every later write would fail too: the run stops
    except FlareError as e:
        result.error = str(e)
        result.kind = None
    return result


def image_paths(pseudo_dir: Path, images: list[Path]) -> dict[str, str]:
    """Case -> image path: from --images folders, else from pseudolabel's run records (the
    folder's own and each shard's: a job array writes only ``pseudolabel.shard-I-of-N.json``)."""
    from flarecli.core.inference.record import folder_scans

    paths = {case: scan["image"] for case, scan in folder_scans(Path(pseudo_dir),
                                                               "pseudolabel").items()
             if isinstance(scan.get("image"), str)}
    for folder in images:
        for c in discover_cases(require_dir(folder, "images")).cases:
            if c.image is not None:
                paths[c.id] = absolute(c.image)
    return paths


@dataclass
class CorrectPlan:
    jobs: list[CorrectJob]
    stray: list[tuple[Path, str]]  # ignored files
    failed: list[CorrectResult]  # cases that cannot be corrected (a duplicate file)
    manifest: Path  # where the manifest goes


def plan(pseudo_dir: Path, labels_dir: Path, output_dir: Path, images: list[Path],
         overwrite: bool, rule: str = "stmt", manifest: Path | None = None) -> CorrectPlan:
    """The jobs of ``flare correct``; ``manifest``: where the manifest goes (default
    OUTPUT/manifest.json). Neither the labels nor the manifest may land among the cases
    read: the pseudo-labels, the labels, the scans (``images`` and the folders
    pseudolabel's run record names)."""
    pseudo_dir = require_dir(pseudo_dir, "pseudo-label")
    labels_dir = require_dir(labels_dir, "labels")
    found_pseudo, found_labels = label_files(pseudo_dir), label_files(labels_dir)
    pseudo = {c.id: c for c in found_pseudo.cases}
    labels = {c.id: c for c in found_labels.cases}
    if not pseudo and not labels:
        raise InputError(f"{pseudo_dir}, {labels_dir}: no label maps found")
    image_of = image_paths(pseudo_dir, images)
    read = [pseudo_dir, labels_dir, *images, *sorted(scan_folders(image_of))]
    manifest = check_output_file(manifest, "--manifest", case_dirs=read) \
        or Path(output_dir) / "manifest.json"
    check_output_dir(output_dir, "output folder", case_dirs=read)
    out = Path(output_dir).resolve()
    jobs, failed = [], []
    for cid in sorted(set(pseudo) | set(labels)):
        problems = [p for c in (pseudo.get(cid), labels.get(cid)) if c for p in c.problems]
        if problems:
            failed.append(CorrectResult(cid, image_of.get(cid), str(out / f"{cid}.nii.gz"),
                                 error="; ".join(problems)))
            continue
        jobs.append(CorrectJob(cid, image_of.get(cid),
                        str(pseudo[cid].label) if cid in pseudo else None,
                        str(labels[cid].label) if cid in labels else None,
                        str(out / f"{cid}.nii.gz"), overwrite, rule))
    check_ours(out, "correct", [Path(j.target) for j in jobs], recorded_outputs(out))
    remove_stale_parts(output_dir)
    return CorrectPlan(jobs, found_pseudo.stray + found_labels.stray, failed, manifest)


def scan_folders(image_of: dict[str, str]) -> set[Path]:
    """The folders holding the cases' scans (a NIfTI file's folder, a DICOM series folder),
    which pseudolabel's run record names: outputs must not land there either."""
    return {Path(p) if Path(p).is_dir() else Path(p).parent for p in image_of.values()}


def recorded_outputs(output_dir: Path) -> list[str]:
    """The names of the corrected labels the folder's manifest lists (a folder written before
    its ledger, :data:`~flarecli.core.io.outputs.WRITTEN`)."""
    import json

    try:
        cases = json.loads((Path(output_dir) / "manifest.json").read_text())["cases"]
        return [Path(c["label"]).name for c in cases
                if isinstance(c.get("label"), str) and Path(c["label"]).parent == output_dir]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def plan_cases(cases: list[Any], pseudo_dir: Path, output_dir: Path, overwrite: bool,
               rule: str = "stmt", selected: set[str] | None = None) -> list[CorrectJob]:
    """Jobs for known cases (``id``, ``image``, ``label`` or None): their pseudo-labels are
    ``pseudo_dir/<id>.nii.gz`` where present. Only the ``selected`` cases (default all) are
    corrected; the other labelled ones go into the manifest as they are (kind FL, or
    ``partial`` with their annotation). A case without label or pseudo-label is left out."""
    pseudo = {c.id: c.label for c in label_files(require_dir(pseudo_dir, "pseudo-label")).cases}
    check_output_dir(output_dir, "output folder", case_dirs=[pseudo_dir])
    out = Path(output_dir).resolve()
    jobs = []
    for c in sorted(cases, key=lambda c: c.id):
        keep = selected is not None and c.id not in selected
        if keep and c.label:
            jobs.append(CorrectJob(c.id, c.image, None, c.label, str(out / f"{c.id}.nii.gz"),
                            overwrite, rule, passthrough=True))
        elif not keep and (c.label or c.id in pseudo):
            jobs.append(CorrectJob(c.id, c.image, str(pseudo[c.id]) if c.id in pseudo else None,
                            c.label, str(out / f"{c.id}.nii.gz"), overwrite, rule))
    check_ours(out, "correct", [Path(j.target) for j in jobs], recorded_outputs(out))
    remove_stale_parts(output_dir)
    return jobs


def manifest(results: list[CorrectResult], source: dict[str, Any]) -> dict[str, Any]:
    from flarecli import __version__

    ok = [r for r in results if r.error is None]
    return {
        "schema": MANIFEST_SCHEMA, "schema_version": 1, "flare_version": __version__,
        "source": source,
        "cases": [r.to_json() for r in ok],
        "summary": {k: sum(1 for r in ok if r.kind == k) for k in (*KINDS, "partial")}
        | {"failed": [r.case for r in results if r.error]},
    }
