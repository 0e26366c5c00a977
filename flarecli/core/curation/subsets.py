"""Cases as training and pseudo-labelling see them, read from any source, and the subsets
recipes name (:class:`flarecli.core.recipes.spec.Subset`).

Sources:

* a dataset folder (imagesTr/ + labelsTr/, optional imagesUn/): every case is audited;
  a labelled case's label is taken as complete (kind FL) -- on partial labels this is the
  "naive" baseline of StMt's ablation;
* an audit manifest (``flare audit --json``): kind FL when all 13 organs are annotated, else
  ``partial``; ``unlabeled`` without a label;
* a corrected-label manifest (``flare correct``): each case carries its kind (FL, CPL, PL)
  and the classes that came from annotation (``annotated``).

A case's ``annotated`` classes are those of its real annotation (not of a pseudo-label);
its audit group (``13_organs``, ``5_organs_tumor``, ...) follows from them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError
from flarecli.core.io.cases import absolute
from flarecli.core.labels import ORGANS, TUMOR


@dataclass(frozen=True)
class SourceCase:
    """One case of a source. ``label`` is None for an unlabeled scan."""

    id: str
    image: str
    label: str | None
    kind: str
    annotated: tuple[int, ...] = ()

    @property
    def group(self) -> str:
        from flarecli.core.curation.audit import label_group

        organs = [c for c in self.annotated if c in ORGANS]
        return label_group(self.kind != "unlabeled", organs, TUMOR in self.annotated)


def _audit_kind(entry: dict[str, Any]) -> str:
    if not entry.get("labeled", entry.get("label") is not None):
        return "unlabeled"
    return "FL" if entry.get("organ_category") == "full" else "partial"


#: (case id, problem) of a case a source holds but cannot give.
Problems = list[tuple[str, str]]


def cases_from_manifest(path: Path) -> tuple[list[SourceCase], list[str], Problems]:
    """Cases of an audit or correct manifest; returns (cases, notes, problems). Entries
    the audit found problems in are left out with a note (the audit reported them); an
    entry that is not a usable case (no image, an id that cannot name a file) is a
    problem. Relative paths are relative to the manifest's folder."""
    from flarecli.core.curation.audit import entry_classes
    from flarecli.core.io.cases import case_id_problem
    from flarecli.core.io.files import read_json

    data = read_json(path, "manifest")
    entries = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a flare manifest (no 'cases' list)")
    base = Path(path).resolve().parent
    cases, skipped, problems = [], [], []
    listed = Counter(e.get("id") for e in entries if isinstance(e, dict))
    reported: set[str] = set()
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("id"), str):
            problems.append((f"{path.name} entry {n}", "not a case (no id)"))
            continue
        bad_id = case_id_problem(e["id"])
        if bad_id or not isinstance(e.get("image"), str) or not e["image"]:
            problems.append((e["id"][:60], bad_id or "no image"))
            continue
        if listed[e["id"]] > 1:  # merged manifests: neither entry is known to be the right one
            if e["id"] not in reported:
                reported.add(e["id"])
                problems.append((e["id"][:60], f"listed {listed[e['id']]} times in {path.name}"))
            continue
        if e.get("problems"):
            skipped.append(e["id"])
            continue
        label = e.get("label")
        if label is not None and not isinstance(label, str):
            problems.append((e["id"][:60], f"'label' must be a path, not {label!r}"[:120]))
            continue
        if label and not (base / label).is_file():
            problems.append((e["id"][:60], f"{base / label}: label file not found"))
            continue
        try:
            annotated = entry_classes(e)
        except ValueError as err:
            problems.append((e["id"][:60], str(err)))
            continue
        kind = str(e["kind"]) if "kind" in e else _audit_kind(e)  # flare correct, flare audit
        cases.append(SourceCase(str(e["id"]), str(base / e["image"]),
                                None if not label else str(base / label), kind, annotated))
    notes = [f"{len(skipped)} manifest cases have problems and are left out "
             f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})"] if skipped else []
    return cases, notes, problems


def cases_from_dataset(folder: Path, workers: int = 1
                       ) -> tuple[list[SourceCase], list[str], Problems, Problems]:
    """Every case of a dataset folder, audited as ``flare audit`` does (readable, 3-D, labels
    integers in 0..14 on the image's grid); labels taken as complete (kind FL). Returns
    (cases, notes, case problems, problems of the folder itself: (file, problem), e.g. a
    malformed dataset.json). A case with a problem is left out and reported."""
    from flarecli.core.curation.audit import audit_case, dataset_cases
    from flarecli.core.parallel import imap_ordered

    found = dataset_cases(folder)
    cases, problems = [], []
    for a in imap_ordered(audit_case, found.cases, workers):
        if a.problems:
            problems.append((a.id, "; ".join(a.problems)))
            continue
        annotated = tuple(a.organs) + ((TUMOR,) if a.tumor else ())
        kind = "FL" if a.labeled else "unlabeled"
        cases.append(SourceCase(a.id, absolute(a.image),
                                absolute(a.label) if a.label else None, kind,
                                annotated))
    notes = ["plain labels are taken as complete (FL); for partial labels use an audit or "
             "correct manifest"]
    return cases, notes, problems, [(str(p), m) for p, m in found.problems]


def read_source(source: Path, workers: int = 1
                ) -> tuple[list[SourceCase], list[str], Problems, Problems]:
    """Cases of a dataset folder or a manifest (see the module docstring): (cases, notes,
    problems of cases, which are left out, problems of the source's own files)."""
    source = Path(source)
    if source.is_dir():
        if not (source / "imagesTr").is_dir():
            raise InputError(f"{source}: no imagesTr/ folder",
                             hint="give a dataset folder or a manifest (.json)")
        return cases_from_dataset(source, workers)
    if source.is_file():
        return (*cases_from_manifest(source), [])
    raise InputError(f"{source}: no such dataset folder or manifest")


def matches(case: SourceCase, subset: Any, named: dict[str, Any]) -> bool:
    """Whether a case belongs to a subset (a name from ``named`` or a Subset)."""
    if isinstance(subset, str):
        return matches(case, named[subset], named)
    if subset.any_of and not any(matches(case, s, named) for s in subset.any_of):
        return False
    if subset.kinds is not None and case.kind not in subset.kinds:
        return False
    if subset.groups is not None and case.group not in subset.groups:
        return False
    have = set(case.annotated)
    if not set(subset.annotates_all) <= have:
        return False
    if subset.annotates_any and not have & set(subset.annotates_any):
        return False
    return subset.annotates_only is None or have <= set(subset.annotates_only)


def select(cases: list[SourceCase], subset: Any, named: dict[str, Any]) -> list[SourceCase]:
    """The cases of a subset, sorted by id."""
    return sorted((c for c in cases if matches(c, subset, named)), key=lambda c: c.id)
