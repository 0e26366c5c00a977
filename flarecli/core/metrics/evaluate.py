"""``flare evaluate``: per case and class DSC / NSD with the FLARE rules, and their summary.

FLARE rules (official FLARE23 script), per case and class c in 1..14:

* GT and prediction both without c: DSC = NSD = 1. GT without c, prediction with c: 0 and 0.
* Aorta, IVC and esophagus (``TUBULAR``) are scored only on the axial slices the GT covers.
* DSC below ``nsd_threshold`` (0.2 since 2024, 0.1 before): NSD = 0 without surfaces.
* NSD tolerance per class: ``labels.NSD_TOLERANCE_MM``.

Protocols:

* ``"flare23"`` reproduces the official script exactly: the tubular crop is voxel axis 2 (flare
  array axis 0) as ``[z_min:z_max]``, an exclusive end, so the GT's top slice is dropped (and a
  GT on a single slice gives NaN, as there); spacing from the header; per-case values rounded to
  4 decimals as in its CSV, from which its means are taken. Spacing is the GT header's
  ``pixdim`` (nibabel's ``get_zooms()``), which ITK can replace by the sform's column norms.
* ``"exact"`` (default): the inclusive slice range along the image's true superior-inferior
  axis (correct for any orientation), no rounding.

Partial labels: given the classes a GT case annotates (from an audit manifest), every other
class is "not annotated": no score (None) and left out of the means, instead of the free 1.0
the official rule gives.

Lesions: beside the voxel scores, each case gets lesion-wise figures for class 14
(:mod:`flarecli.core.metrics.lesions`), except where a manifest says its GT does not annotate
tumors. They are flare's own, the same under both protocols (never rounded).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from flarecli.core.errors import FlareError, InputError, check_choice, check_volume
from flarecli.core.io.nifti import Geometry, header_zooms, read_label_map
from flarecli.core.labels import (
    CLASSES,
    MAX_LABEL,
    MIN_TUMOR_MM3,
    NSD_TOLERANCE_MM,
    ORGANS,
    TUBULAR,
    TUMOR,
    label_name,
)
from flarecli.core.metrics.lesions import (
    CaseLesions,
    match_lesions,
    summarize_lesions,
)
from flarecli.core.metrics.scores import dice, normalized_surface_dice
from flarecli.core.preprocessing.boxes import nonzero_box
from flarecli.core.runtime import usable_cpus

PROTOCOLS: tuple[str, ...] = ("exact", "flare23")
CSV_COLUMNS: tuple[str, ...] = ("case", "label", "name", "dsc", "nsd", "gt_voxels",
                                "pred_voxels", "annotated", "true_lesions", "detected",
                                "missed", "false_positives", "lesion_volumes_ml", "lesion_dscs")


@dataclass
class ClassScore:
    label: int
    dsc: float | None
    nsd: float | None
    gt_voxels: int
    pred_voxels: int
    annotated: bool = True


@dataclass
class CaseResult:
    case: str
    scores: list[ClassScore] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing_prediction: bool = False
    lesions: CaseLesions | None = None  # None: not scored (a problem, or tumors not annotated)
    notes: list[str] = field(default_factory=list)  # how the GT's header placed its grid

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class MapIndex:
    """Per-class boxes (:func:`class_boxes`) and voxel counts of a GT and a prediction map."""

    gt_boxes: list[tuple[slice, ...] | None]
    gt_counts: list[int]
    pred_boxes: list[tuple[slice, ...] | None]
    pred_counts: list[int]

    def union(self, c: int) -> tuple[slice, ...] | None:
        """The box holding every voxel of class ``c`` in both maps (None: in neither)."""
        a, b = self.gt_boxes[c - 1], self.pred_boxes[c - 1]
        return b if a is None else _union_box(a, b)


def index_maps(gt: np.ndarray, pred: np.ndarray) -> MapIndex:
    """Boxes and counts of both maps, the two at once (the work releases the GIL)."""
    def boxes_and_counts(labels: np.ndarray) -> tuple[list, list[int]]:
        boxes = class_boxes(labels)
        return boxes, _counts(labels, boxes)

    with ThreadPoolExecutor(2) as pool:
        (gt_boxes, gt_counts), (pred_boxes, pred_counts) = pool.map(boxes_and_counts,
                                                                    (gt, pred))
    return MapIndex(gt_boxes, gt_counts, pred_boxes, pred_counts)


def score_labels(
    gt: np.ndarray,
    pred: np.ndarray,
    geometry: Geometry,
    protocol: str = "exact",
    nsd_threshold: float = 0.2,
    annotated: set[int] | None = None,
    classes: tuple[int, ...] = CLASSES,
    index: MapIndex | None = None,
) -> list[ClassScore]:
    """Score two uint8 label maps ([z, y, x], same grid) class by class.

    ``annotated``: the classes the GT annotates (None = all). Classes outside it get
    ``dsc = nsd = None``. Works on per-class bounding boxes (``index``, made here when not
    given).
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'")
    index = index or index_maps(gt, pred)
    gt_boxes, gt_counts = index.gt_boxes, index.gt_counts
    pred_counts = index.pred_counts
    axis = 0 if protocol == "flare23" else geometry.superior_axis()

    def score(c: int) -> ClassScore:
        n_gt, n_pred = int(gt_counts[c]), int(pred_counts[c])
        if annotated is not None and c not in annotated:
            return ClassScore(c, None, None, n_gt, n_pred, annotated=False)
        if n_gt == 0:
            value = 1.0 if n_pred == 0 else 0.0
            return ClassScore(c, value, value, n_gt, n_pred)
        box = index.union(c)
        if c in TUBULAR:
            lo, hi = gt_boxes[c - 1][axis].start, gt_boxes[c - 1][axis].stop  # hi exclusive
            if protocol == "flare23":
                hi -= 1  # the official [z_min:z_max] drops the top GT slice
            box = list(box)
            box[axis] = slice(max(box[axis].start, lo), min(box[axis].stop, hi))
            if box[axis].start >= box[axis].stop:
                box[axis] = slice(lo, lo)
            box = tuple(box)
        g, p = gt[box] == c, pred[box] == c
        d = dice(g, p)
        if d < nsd_threshold:
            nsd = 0.0
        else:  # NaN (an empty flare23 crop) falls through like in the official script
            nsd = normalized_surface_dice(g, p, geometry.spacing_xyz, NSD_TOLERANCE_MM[c])
        if protocol == "flare23":
            d, nsd = round(d, 4), round(nsd, 4)
        return ClassScore(c, d, nsd, n_gt, n_pred)

    # the classes at once: the masks, surfaces and offset look-ups release the GIL
    with ThreadPoolExecutor(max(2, usable_cpus())) as pool:
        return list(pool.map(score, classes))


def class_boxes(labels: np.ndarray) -> list[tuple[slice, ...] | None]:
    """``ndimage.find_objects(labels, max_label=MAX_LABEL)``, run on the box of the non-zero
    voxels only. That box is found by ``any`` over whole rows read 8 voxels at a time: on a
    512 x 512 x 273 map 0.01 s, and ``find_objects`` then reads the abdomen instead of the
    whole scan (0.11 s -> 0.03 s for an abdomen box of 13 % of the scan)."""
    outer = nonzero_box(labels)
    if outer is None:
        return [None] * MAX_LABEL
    inner = ndimage.find_objects(labels[outer], max_label=MAX_LABEL)
    return [None if box is None else
            tuple(slice(o.start + b.start, o.start + b.stop) for o, b in zip(outer, box,
                                                                          strict=True))
            for box in inner]


def _counts(labels: np.ndarray, boxes: list) -> list[int]:
    """Voxels per class 0..MAX_LABEL (0 not counted), each counted inside its own box, which
    ``find_objects`` has already given: unlike ``boxes.label_counts`` (one ``bincount`` of
    the labelled box) it needs no integer copy and runs beside the other map's count."""
    counts = [0] * (MAX_LABEL + 1)
    for c, box in enumerate(boxes, start=1):
        if box is not None:
            counts[c] = int(np.count_nonzero(labels[box] == c))
    return counts


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if b is None:
        return a
    pairs = zip(a, b, strict=True)
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in pairs)


@dataclass(frozen=True)
class EvalJob:
    case: str
    gt: Path
    pred: Path | None
    protocol: str
    nsd_threshold: float
    annotated: tuple[int, ...] | None
    min_lesion_mm3: float = MIN_TUMOR_MM3


def evaluate_case(job: EvalJob) -> CaseResult:
    """Score one case; problems (unreadable, geometry, label values) go to ``problems``."""
    result = CaseResult(job.case, missing_prediction=job.pred is None)
    try:
        with ThreadPoolExecutor(1) as pool:  # both files decompress at once
            pred_read = pool.submit(read_label_map, job.pred, "prediction") if job.pred \
                else None
            gt, geometry = read_label_map(job.gt, "ground truth")
            pred_pair = pred_read.result() if pred_read is not None else None
        if geometry.note:
            result.notes.append(f"ground truth {job.gt.name}: {geometry.note}")
        if pred_pair is None:
            pred = np.zeros_like(gt)
        else:
            pred, pred_geometry = pred_pair
            mismatch = pred_geometry.mismatches(geometry)  # in the order of the message
            if mismatch:
                result.problems.append("prediction vs ground truth " + "; ".join(mismatch))
                return result
        annotated = set(job.annotated) if job.annotated is not None else None
        if job.protocol == "flare23":  # the official script's spacing: the GT header's pixdim
            zooms = header_zooms(job.gt)
            if zooms is not None and all(z > 0 for z in zooms):
                geometry = replace(geometry, spacing_xyz=zooms)
        index = index_maps(gt, pred)
        result.scores = score_labels(gt, pred, geometry, job.protocol, job.nsd_threshold,
                                     annotated, index=index)
        if annotated is None or TUMOR in annotated:
            box = index.union(TUMOR)
            result.lesions = CaseLesions() if box is None else match_lesions(
                gt, pred, geometry.voxel_volume_mm3, job.min_lesion_mm3, box)
    except FlareError as e:
        result.problems.append(str(e))
    return result


#: The most cases :func:`evaluate_cases` scores at once in one process.
CASES_AT_ONCE = 4


def evaluate_cases(jobs: Iterable[EvalJob], workers: int = 1) -> Iterator[CaseResult]:
    """``evaluate_case`` of each job, in order.

    ``workers`` > 1: that many processes (:func:`flarecli.core.parallel.imap_ordered`).
    Otherwise threads of this process, as many cases at once as there are usable CPUs, from 2
    to :data:`CASES_AT_ONCE`: the decompression, the class boxes, the masks and the surfaces
    release the GIL, so one case's reading overlaps another's scoring, without the start-up
    and the pickling of processes (each case's classes run in threads too, so a few cases
    keep many cores busy). Memory: about 0.3 GB per 512 x 512 x 300 case in flight.
    """
    if workers > 1:
        from flarecli.core.parallel import imap_ordered

        yield from imap_ordered(evaluate_case, jobs, workers)
        return
    at_once = min(max(2, usable_cpus()), CASES_AT_ONCE)
    with ThreadPoolExecutor(at_once) as pool:
        pending: deque[Future[CaseResult]] = deque()
        for job in jobs:
            pending.append(pool.submit(evaluate_case, job))
            if len(pending) >= at_once:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass
class EvalPlan:
    """What ``evaluate`` will score: the jobs, predictions without ground truth, ignored
    files, and cases that cannot be scored at all (a duplicate file)."""

    jobs: list[EvalJob]
    extra: list[str]
    stray: list[tuple[Path, str]]
    failed: list[CaseResult]


def plan_jobs(
    pred_dir: Path,
    gt_dir: Path,
    protocol: str,
    nsd_threshold: float,
    manifest: dict[str, Any] | None = None,
    min_lesion_mm3: float = MIN_TUMOR_MM3,
) -> EvalPlan:
    """Pair GT and prediction files. A case with two files of one kind (``x.nii`` beside
    ``x.nii.gz``) is not scored: which one was meant is the user's to say."""
    from flarecli.core.io.cases import label_files

    check_choice("protocol", protocol, PROTOCOLS)
    if not 0.0 <= nsd_threshold <= 1.0:
        raise InputError(f"--nsd-threshold {nsd_threshold}: must be within 0..1")
    check_volume("--min-lesion-mm3", min_lesion_mm3)
    gts = label_files(gt_dir)
    found = label_files(pred_dir)
    preds = {c.id: c for c in found.cases}
    if not gts.cases:
        raise InputError(f"{gt_dir}: no ground-truth NIfTI files")
    annotated_by_case: dict[str, tuple[int, ...]] = {}
    if manifest is not None:  # read by read_manifest, which checked every entry
        from flarecli.core.curation.audit import entry_classes

        annotated_by_case = {e["id"]: entry_classes(e) for e in manifest["cases"]}
    jobs, failed = [], []
    for case in gts.cases:
        if manifest is not None and case.id not in annotated_by_case:
            raise InputError(f"case '{case.id}' is not in the manifest",
                             hint="audit the same ground-truth folder to make it")
        pred = preds.get(case.id)
        problems = case.problems + (pred.problems if pred is not None else [])
        if problems:
            failed.append(CaseResult(case.id, problems=problems))
            continue
        jobs.append(EvalJob(case.id, case.label, pred.label if pred else None, protocol,
                            nsd_threshold,
                            annotated_by_case.get(case.id) if manifest is not None else None,
                            min_lesion_mm3))
    extra = sorted(set(preds) - {c.id for c in gts.cases})
    return EvalPlan(jobs, extra, gts.stray + found.stray, failed)


def summarize(results: list[CaseResult], protocol: str, nsd_threshold: float,
              min_lesion_mm3: float = MIN_TUMOR_MM3) -> dict[str, Any]:
    """Per-class mean/std over the scored cases; organ DSC/NSD = mean of the organ class
    means (``organ_classes`` of them: 13 unless a class has no score in any case, e.g. one
    no GT case annotates under a manifest); ``lesions``: the lesion-wise figures of the
    cases that have them (:func:`flarecli.core.metrics.lesions.summarize_lesions`).

    NaN and not-annotated (None) cells are left out (pandas-style); std is the population
    standard deviation (ddof = 0).
    """
    per_class: dict[str, Any] = {}
    for c in CLASSES:
        entry: dict[str, Any] = {"name": label_name(c)}
        for metric in ("dsc", "nsd"):
            values = np.array([getattr(s, metric) for r in results if r.ok for s in r.scores
                               if s.label == c and getattr(s, metric) is not None], float)
            values = values[~np.isnan(values)]
            entry[metric] = float(values.mean()) if values.size else None
            entry[f"{metric}_std"] = float(values.std()) if values.size else None
            entry["n"] = int(values.size)
        per_class[str(c)] = entry

    def mean_of(classes, metric):
        vals = [per_class[str(c)][metric] for c in classes if per_class[str(c)][metric] is not None]
        return float(np.mean(vals)) if vals else None

    lesions = {r.case: r.lesions for r in results if r.ok and r.lesions is not None}

    return {
        "protocol": protocol,
        "nsd_threshold": nsd_threshold,
        "cases": len(results),
        "scored_cases": sum(1 for r in results if r.ok),
        "failed_cases": [r.case for r in results if not r.ok],
        "missing_predictions": [r.case for r in results if r.missing_prediction],
        "organ_dsc": mean_of(ORGANS, "dsc"),
        "organ_nsd": mean_of(ORGANS, "nsd"),
        "organ_classes": sum(per_class[str(c)]["dsc"] is not None for c in ORGANS),
        "tumor_dsc": per_class[str(TUMOR)]["dsc"],
        "tumor_nsd": per_class[str(TUMOR)]["nsd"],
        "per_class": per_class,
        "lesions": summarize_lesions(lesions, min_lesion_mm3),
    }


def predicted_beyond_truth(results: list[CaseResult]) -> list[tuple[int, int, bool]]:
    """Classes a prediction has where its GT case has none, scored 0 by the official rule:
    (label, cases, whether any GT case has the class at all), by label. Not-annotated
    classes (a manifest) are not counted: they have no score. Without a manifest this is
    how partial ground truth shows: a class no GT case has is most likely not annotated."""
    scored = [s for r in results if r.ok for s in r.scores if s.annotated]
    out = []
    for c in CLASSES:
        cases = sum(1 for s in scored if s.label == c and s.gt_voxels == 0 and s.pred_voxels)
        if cases:
            out.append((c, cases, any(s.label == c and s.gt_voxels for s in scored)))
    return out


def csv_rows(results: list[CaseResult]) -> list[list[Any]]:
    def cell(v):
        return "" if v is None else ("nan" if np.isnan(v) else format(float(v), ".10g"))

    def lesion_cells(lesions: CaseLesions | None) -> list[Any]:
        if lesions is None:
            return [""] * 6
        return [lesions.true_lesions, lesions.detected, lesions.missed,
                lesions.false_positives, ";".join(format(v, ".6g") for v in lesions.volumes_ml),
                ";".join(cell(d) for d in lesions.dscs)]

    rows = []
    for r in results:
        for s in r.scores:
            lesion = lesion_cells(r.lesions if s.label == TUMOR else None)
            rows.append([r.case, s.label, label_name(s.label), cell(s.dsc), cell(s.nsd),
                         s.gt_voxels, s.pred_voxels, int(s.annotated), *lesion])
    return rows
