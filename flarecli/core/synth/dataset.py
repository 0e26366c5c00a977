"""``flare synth``: a FLARE-like synthetic dataset with FLARE23's partial-label patterns.

The anatomy is drawn in :mod:`flarecli.core.synth.anatomy` and rendered to CT in
:mod:`flarecli.core.synth.phantom`; this module decides the splits, the label pattern of
each training case, writes the NIfTI folders and records the truth (``synth.json``) that
tests and the demo compare against.

Layout written under OUT::

    imagesTr/<id>_0000.nii.gz  labelsTr/<id>.nii.gz   partially labeled training cases
    imagesUn/<id>_0000.nii.gz                          unlabeled training cases
    labelsFull/<id>.nii.gz                             complete truth of every Tr and Un case
    imagesTs/<id>_0000.nii.gz  labelsTs/<id>.nii.gz    fully labeled test split
    dataset.json                                       nnU-Net v2 style, plus flare's "synth" key
    synth.json                                         per-case truth record

Every case has its own seed derived from (seed, split, index), so it is identical whatever the
number of workers, and unlabeled/test cases whatever the split sizes. Training cases also
depend on their pattern, assigned by an exact-share shuffle over ``n_train`` cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from flarecli import __version__
from flarecli.core.errors import InputError
from flarecli.core.io.dataset_json import dataset_json
from flarecli.core.io.files import kept, remove_stale_parts, write_text_atomic
from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume
from flarecli.core.labels import CLASSES, FIVE_ORGANS, ORGANS, TUMOR
from flarecli.core.recipes.spec import SynthConfig
from flarecli.core.synth.case import TUMOR_COUNT_P

#: FLARE23 training label patterns and their shares (StMt Fig. 1, FLARE23 data description).
PATTERNS: dict[str, float] = {
    "13_organs": 0.10,
    "5_organs": 0.20,
    "5_organs_tumor": 0.27,
    "tumor_only": 0.40,
    "other": 0.03,
}
#: Draws of a training case before an empty annotation is kept as it is.
MAX_REDRAWS = 8
TUMOR_PATTERNS = ("5_organs_tumor", "tumor_only")
#: Chance that a 5-organ case misses one of its five organs (annotators skip organs).
ORGAN_DROPOUT = 0.10
#: Chance that a tumor-annotated case with several tumors leaves its smallest one unannotated.
TUMOR_MISSED = 0.30

SPLITS = {"tr": 0, "un": 1, "ts": 2}
#: Chance of 0..4 lesions in a test case: most test scans hold at least one, so that tumor
#: scores measure lesions found, not empty maps agreeing.
TEST_TUMOR_COUNT_P: tuple[float, ...] = (0.15, 0.35, 0.25, 0.15, 0.10)


@dataclass(frozen=True)
class CaseJob:
    out: str
    split: str
    index: int
    case_id: str
    seed: int
    size: int
    pattern: str | None
    overwrite: bool


def split_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder apportionment of n cases to the patterns (exact total n)."""
    raw = {k: n * v / sum(shares.values()) for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], list(raw).index(k)))[:rest]:
        counts[k] += 1
    return counts


def case_seed(seed: int, split: str, index: int) -> int:
    return int(np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(1)[0])


def plan(config: SynthConfig, seed: int, out: Path, overwrite: bool = False) -> list[CaseJob]:
    """The jobs of a dataset, patterns assigned (exact shares, deterministic shuffle)."""
    config.validate()
    counts = split_counts(config.train, PATTERNS)
    patterns = [p for p, n in counts.items() for _ in range(n)]
    np.random.default_rng(seed).shuffle(patterns)
    jobs = []
    for split, n in (("tr", config.train), ("un", config.unlabeled), ("ts", config.test)):
        for i in range(n):
            jobs.append(CaseJob(
                out=str(out), split=split, index=i, case_id=f"syn_{split}_{i + 1:04d}",
                seed=case_seed(seed, split, i), size=config.size,
                pattern=patterns[i] if split == "tr" else None, overwrite=overwrite,
            ))
    return jobs


def partial_label(
    full: np.ndarray, pattern: str, n_tumors: int, rng: np.random.Generator
) -> np.ndarray:
    """The annotation a FLARE23 training case of ``pattern`` would carry.

    Classes outside the annotated set become background. Organ drop-outs and missed tumors
    follow ORGAN_DROPOUT / TUMOR_MISSED.
    """
    if pattern == "13_organs":
        keep = set(ORGANS) | {TUMOR}
    elif pattern in ("5_organs", "5_organs_tumor"):
        keep = set(FIVE_ORGANS)
        if rng.random() < ORGAN_DROPOUT:
            keep.discard(int(rng.choice(FIVE_ORGANS)))
        if pattern == "5_organs_tumor":
            keep.add(TUMOR)
    elif pattern == "tumor_only":
        keep = {TUMOR}
    elif pattern == "other":
        k = int(rng.integers(2, 13))
        keep = {int(v) for v in rng.choice(ORGANS, size=k, replace=False)}
        if n_tumors and rng.random() < 0.5:
            keep.add(TUMOR)
    else:
        raise ValueError(f"unknown pattern {pattern}")
    lut = np.zeros(256, np.uint8)
    for c in keep:
        lut[c] = c
    label = lut[full]
    if TUMOR in keep and rng.random() < TUMOR_MISSED:
        components, n = ndimage.label(label == TUMOR, structure=np.ones((3, 3, 3), bool))
        if n >= 2:
            sizes = np.bincount(components.ravel())[1:]
            label[components == 1 + int(np.argmin(sizes))] = 0
    return label


def make_case(job: CaseJob) -> dict[str, Any]:
    """Render and write one case (skipped when its files exist); return its truth record."""
    from flarecli.core.synth.anatomy import sample_case_spec
    from flarecli.core.synth.phantom import render_case

    out = Path(job.out)
    rng = np.random.default_rng(job.seed)
    n_tumors = None
    if job.pattern in TUMOR_PATTERNS:
        n_tumors = int(rng.integers(1, 5))
    elif job.split == "ts":
        n_tumors = int(rng.choice(5, p=TEST_TUMOR_COUNT_P))
    elif job.pattern is not None:
        n_tumors = int(rng.choice(5, p=TUMOR_COUNT_P))
    image_dir, label_dir = {
        "tr": ("imagesTr", "labelsTr"), "un": ("imagesUn", None), "ts": ("imagesTs", "labelsTs"),
    }[job.split]
    truth_dir = "labelsTs" if job.split == "ts" else "labelsFull"
    paths = {"image": out / image_dir / f"{job.case_id}_0000.nii.gz",
             "truth": out / truth_dir / f"{job.case_id}.nii.gz"}
    if label_dir and job.split == "tr":
        paths["label"] = out / label_dir / f"{job.case_id}.nii.gz"

    # A training case's annotation is never empty: where every annotated class lies outside the
    # field of view (a tumor_only case whose lesions fell out of a pelvis scan), the case is
    # drawn again from the same generator, so the draws stay a function of the seed.
    for _ in range(MAX_REDRAWS):
        spec = sample_case_spec(rng, size=job.size, n_tumors=n_tumors)
        image, full = render_case(spec)
        label = full
        if "label" in paths:
            label = partial_label(full, job.pattern, n_tumors or 0, rng)
        if label.any():
            break
    grid = spec.grid
    geom = Geometry(tuple(grid.shape_zyx), tuple(grid.spacing_xyz), tuple(grid.origin_xyz),
                    tuple(grid.direction))
    record: dict[str, Any] = {
        "id": job.case_id, "split": job.split, "pattern": job.pattern,
        "n_tumors": int(n_tumors or 0), "geometry": geom.to_json(),
        "truth_classes": [int(c) for c in np.unique(full) if c in CLASSES],
    }
    record["classes"] = [int(c) for c in np.unique(label) if c in CLASSES]
    if job.split == "un":
        record["classes"] = []
    if not all(kept(p, job.overwrite) for p in paths.values()):
        write_volume(paths["truth"], full, geom)
        if "label" in paths:
            write_volume(paths["label"], label, geom)
        write_volume(paths["image"], image, geom)  # last: its presence marks the case done
    return record


def params_of(config: SynthConfig, seed: int) -> dict[str, Any]:
    """What made a dataset (its ``dataset.json`` and ``synth.json`` record it; a re-run resumes
    only the same): the keys are those written before SynthConfig lost its ``n_`` prefixes."""
    return {"generator": f"flare {__version__}", "n_train": config.train,
            "n_unlabeled": config.unlabeled, "n_test": config.test, "seed": seed,
            "size": config.size}


def prepare(config: SynthConfig, seed: int, out: Path, overwrite: bool) -> list[CaseJob]:
    """Check everything (the settings, OUT: resume only the same dataset, writable), then
    write dataset.json and return the jobs: a refused command leaves nothing behind."""
    from flarecli.core.io.outputs import check_output_dir

    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    ds_path = out / "dataset.json"
    params = params_of(config, seed)
    try:
        old = json.loads(ds_path.read_text()).get("synth") if ds_path.is_file() else None
    except (OSError, ValueError, AttributeError):
        old = None
    if old is None and out.exists() and any(out.iterdir()):
        # --overwrite regenerates a synthetic dataset, never a real one: pointed at a real
        # dataset it replaced its dataset.json and the cases of the same names
        raise InputError(f"{out}: folder is not empty, and not a dataset flare synth made",
                         hint="choose an empty folder (--overwrite regenerates only a "
                         "synthetic dataset)")
    if old is not None and old != params and not overwrite:
        raise InputError(
            f"{out}: holds another dataset (different synth parameters)",
            hint="choose an empty folder, or pass --overwrite to regenerate it",
        )
    check_output_dir(out, "output folder")
    for sub in ("imagesTr", "labelsTr", "imagesUn", "labelsFull", "imagesTs", "labelsTs"):
        remove_stale_parts(out / sub)
    ds = dataset_json(
        "flare-synth", config.train,
        description="Synthetic FLARE-like abdominal CT phantoms with FLARE23 partial labels",
        extra={"numUnlabeled": config.unlabeled, "numTest": config.test, "synth": params},
    )
    write_text_atomic(ds_path, json.dumps(ds, indent=2) + "\n")
    return plan(config, seed, out, overwrite)


def finish(config: SynthConfig, seed: int, out: Path, records: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """Write synth.json (the truth record) and return it."""
    data = {"synth": params_of(config, seed), "patterns": PATTERNS, "cases": records}
    write_text_atomic(Path(out) / "synth.json", json.dumps(data, indent=2) + "\n")
    return data
