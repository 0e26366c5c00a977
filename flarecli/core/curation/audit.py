"""Dataset audit: what each case annotates, and every integrity problem, one case at a time.

This is the analysis the FLARE papers did by hand (StMt Fig. 1: organ full / partial / none,
tumor / no tumor; the dual-decoder paper's partition by label pattern; label-count statistics).
The manifest it produces (:func:`manifest`) is what later commands consume.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flarecli import __version__
from flarecli.core.errors import FlareError, InputError
from flarecli.core.io.cases import Case, Discovery, absolute, discover_cases, require_dir
from flarecli.core.io.dataset_json import read_dataset_json
from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import read_volume
from flarecli.core.labels import (
    CLASSES,
    FIVE_ORGANS,
    GROUPS,
    MAX_LABEL,
    ORGANS,
    TUMOR,
    check_flare_labels,
    check_label_values,
)
from flarecli.core.preprocessing.boxes import label_counts

SCHEMA_VERSION = 1


@dataclass
class CaseAudit:
    """The audit of one case. ``voxels`` maps class id (1..14) -> voxel count."""

    id: str
    image: str | None
    label: str | None
    labeled: bool
    organs: list[int] = field(default_factory=list)
    tumor: bool = False
    organ_category: str = "none"
    group: str = "unlabeled"
    shape_xyz: list[int] | None = None
    spacing_xyz: list[float] | None = None
    orientation: str | None = None
    hu_min: float | None = None
    hu_max: float | None = None
    voxels: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: remarks that are not problems: how a file's header placed its grid (a NIfTI whose
    #: qform and sform disagree, or that stores neither)
    notes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.organs) + int(self.tumor)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["voxels"] = {str(k): int(v) for k, v in sorted(self.voxels.items())}
        d["n_classes"] = self.n_classes
        return d


def organ_category(organs: list[int]) -> str:
    if len(organs) == len(ORGANS):
        return "full"
    return "partial" if organs else "none"


def label_group(labeled: bool, organs: list[int], tumor: bool) -> str:
    """The FLARE23 label pattern of a case (see GROUPS)."""
    if not labeled:
        return "unlabeled"
    if len(organs) == len(ORGANS):
        return "13_organs"
    if tuple(organs) == FIVE_ORGANS:
        return "5_organs_tumor" if tumor else "5_organs"
    if not organs:
        return "tumor_only" if tumor else "empty"
    return "other"


def audit_case(case: Case) -> CaseAudit:
    """Audit one case; never raises for data problems (they go to ``problems``)."""
    out = CaseAudit(
        id=case.id,
        image=absolute(case.image) if case.image else None,
        label=absolute(case.label) if case.label else None,
        labeled=case.label is not None,
        problems=list(case.problems),
    )
    out.group = "unlabeled" if not out.labeled else "empty"
    image_geom: Geometry | None = None
    if case.image is None:
        if case.label is not None and not any("has no image" in p for p in out.problems):
            out.problems.append(f"label {case.label.name} has no image")
    else:
        try:
            image, image_geom = read_volume(case.image)
            _describe(out, image_geom)
            if image_geom.note:
                out.notes.append(f"{Path(case.image).name}: {image_geom.note}")
            if image.size:
                out.hu_min, out.hu_max = float(image.min()), float(image.max())
            del image
        except FlareError as e:
            out.problems.append(_short(e, case.image))

    if case.label is not None:
        try:
            label, label_geom = read_volume(case.label)
        except FlareError as e:
            out.problems.append(_short(e, case.label))
            return out
        if label_geom.note:
            out.notes.append(f"{Path(case.label).name}: {label_geom.note}")
        if image_geom is None:
            _describe(out, label_geom)
        else:
            for m in image_geom.mismatches(label_geom):
                out.problems.append(f"image vs label {m}")
        label, value_problems = check_label_values(label)
        out.problems.extend(value_problems)
        if label is None:
            return out
        counts = label_counts(label, minlength=MAX_LABEL + 1)
        out.voxels = {c: int(counts[c]) for c in CLASSES if counts[c] > 0}
        out.organs = [c for c in ORGANS if counts[c] > 0]
        out.tumor = bool(counts[TUMOR] > 0)
        if not out.voxels:
            out.problems.append("label is empty (all background)")
    out.organ_category = organ_category(out.organs)
    out.group = label_group(out.labeled, out.organs, out.tumor)
    return out


def _describe(out: CaseAudit, geom: Geometry) -> None:
    out.shape_xyz = [int(v) for v in geom.shape_zyx[::-1]]
    out.spacing_xyz = [round(float(v), 6) for v in geom.spacing_xyz]
    out.orientation = geom.orientation


def _short(e: FlareError, path: Path) -> str:
    """A problem message without the path prefix (the case id already says where)."""
    msg = str(e)
    prefix = f"{path}: "
    return f"{path.name}: {msg[len(prefix):]}" if msg.startswith(prefix) else msg


# ---------------------------------------------------------------------------------------------
# dataset-level
# ---------------------------------------------------------------------------------------------

def dataset_cases(dataset: Path) -> Discovery:
    """The training cases of a dataset folder: imagesTr + labelsTr, plus imagesUn (unlabeled).

    A ``dataset.json`` whose label ids are not FLARE's is a problem of the dataset.
    """
    dataset = require_dir(dataset, "dataset")
    images_tr, labels_tr = dataset / "imagesTr", dataset / "labelsTr"
    if not images_tr.is_dir():
        raise InputError(
            f"{dataset}: no imagesTr/ folder",
            hint="give --images DIR [--labels DIR] for a folder of another layout",
        )
    found = discover_cases(images_tr, labels_tr if labels_tr.is_dir() else None)
    images_un = dataset / "imagesUn"
    if images_un.is_dir():
        un = discover_cases(images_un)
        known = {c.id for c in found.cases}
        for c in un.cases:
            if c.id in known:
                c.problems.append(f"case id '{c.id}' is in both imagesTr and imagesUn")
        found.cases = sorted(found.cases + un.cases, key=lambda c: c.id)
        found.stray += un.stray
    ds_json = dataset / "dataset.json"
    if ds_json.is_file():
        try:
            found.problems += [(ds_json, m) for m in check_flare_labels(
                read_dataset_json(ds_json)["label_ids"])]
        except InputError as e:
            found.problems.append((ds_json, str(e).removeprefix(f"{ds_json}: ")))
    return found


def summarize(cases: list[CaseAudit], n_dataset_problems: int = 0) -> dict[str, Any]:
    labeled = [c for c in cases if c.labeled]
    cat = Counter(c.organ_category for c in labeled)
    n_classes = Counter(c.n_classes for c in labeled)
    per_class = Counter(k for c in labeled for k in c.voxels)
    groups = Counter(c.group for c in cases)
    return {
        "cases": len(cases),
        "labeled": len(labeled),
        "unlabeled": len(cases) - len(labeled),
        "organ_full": cat.get("full", 0),
        "organ_partial": cat.get("partial", 0),
        "organ_none": cat.get("none", 0),
        "tumor": sum(1 for c in labeled if c.tumor),
        "no_tumor": sum(1 for c in labeled if not c.tumor),
        "problems": sum(1 for c in cases if c.problems) + n_dataset_problems,
        "groups": {g: groups.get(g, 0) for g in GROUPS},
        "n_classes_histogram": {str(k): n_classes[k] for k in sorted(n_classes)},
        "cases_per_class": {str(k): per_class.get(k, 0) for k in CLASSES},
    }


def manifest(cases: list[CaseAudit], found: Discovery, source: dict[str, Any]
             ) -> dict[str, Any]:
    """The audit manifest (schema version 1; see docs/cli.md, 'Audit manifest'). Ignored files
    are listed under ``stray_files``; problems of the dataset itself (its dataset.json)
    under ``dataset_problems``, and they count among the problems."""
    return {
        "schema_version": SCHEMA_VERSION,
        "flare_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "cases": [c.to_json() for c in cases],
        "stray_files": [{"path": str(p.resolve()), "note": m} for p, m in found.stray],
        "dataset_problems": [{"path": str(p.resolve()), "problem": m}
                             for p, m in found.problems],
        "summary": summarize(cases, len(found.problems)),
    }


CSV_COLUMNS: tuple[str, ...] = (
    "id", "labeled", "group", "organ_category", "organs", "tumor", "n_classes", "shape_xyz",
    "spacing_xyz", "orientation", "hu_min", "hu_max",
    *[f"voxels_{c}" for c in CLASSES], "problems", "image", "label",
)


def csv_rows(cases: list[CaseAudit]) -> list[list[Any]]:
    rows = []
    for c in cases:
        rows.append([
            c.id, int(c.labeled), c.group, c.organ_category, " ".join(map(str, c.organs)),
            int(c.tumor), c.n_classes,
            "x".join(map(str, c.shape_xyz)) if c.shape_xyz else "",
            "x".join(f"{v:g}" for v in c.spacing_xyz) if c.spacing_xyz else "",
            c.orientation or "", "" if c.hu_min is None else c.hu_min,
            "" if c.hu_max is None else c.hu_max,
            *[c.voxels.get(k, 0) for k in CLASSES], " | ".join(c.problems),
            c.image or "", c.label or "",
        ])
    return rows


def entry_classes(entry: dict[str, Any]) -> tuple[int, ...]:
    """The classes a manifest entry says are annotated: a correct manifest's ``annotated``
    (ids 1..14), or an audit manifest's ``organs`` (1..13) and ``tumor`` (true or false).
    Raises ValueError naming the field, so that a hand-written manifest is refused rather
    than read as annotating nothing."""
    def ids(key: str, top: int) -> tuple[int, ...]:
        raw = entry.get(key, [])
        if not isinstance(raw, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= top for c in raw):
            raise ValueError(f"'{key}' must be a list of class ids 1..{top} (got {raw!r:.60})")
        return tuple(raw)

    if "kind" in entry:  # flare correct
        return ids("annotated", TUMOR)
    tumor = entry.get("tumor", False)
    if not isinstance(tumor, bool):
        raise ValueError(f"'tumor' must be true or false (got {tumor!r:.60})")
    return ids("organs", max(ORGANS)) + ((TUMOR,) if tumor else ())


def read_manifest(path: Path) -> dict[str, Any]:
    """Read an audit manifest; raises InputError if missing, unreadable or of another schema."""
    from flarecli.core.io.files import read_json

    data = read_json(path, "manifest")
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: not a flare audit manifest (schema_version {SCHEMA_VERSION})")
    if not isinstance(data.get("cases"), list):
        raise InputError(f"{path}: not a flare audit manifest (no 'cases' list)")
    for n, entry in enumerate(data["cases"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise InputError(f"{path}: case {n + 1} is not a case (an object with an 'id')")
        try:
            entry_classes(entry)
        except ValueError as e:
            raise InputError(f"{path}: case '{entry['id'][:60]}': {e}") from None
    return data
