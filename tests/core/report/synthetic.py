"""A large synthetic work folder in the formats flare's commands write: an audit manifest,
evaluate's per-case CSV, pseudolabel's scores.csv and a stats JSON, for ``n`` cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from flarecli.core.labels import LABELS, ORGANS

GROUPS = ("13_organs", "5_organs", "5_organs_tumor", "tumor_only", "unlabeled")


def case_id(k: int) -> str:
    return f"case_{k:05d}"


def write_big_folder(root: Path, n: int = 5000, seed: int = 0) -> dict:
    """Write the folder; returns the known answers: ``worst`` (the case with the lowest mean
    organ DSC) and ``dsc`` (case -> its mean organ DSC)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cases = [case_id(k) for k in range(n)]
    audit = {"schema_version": 1, "flare_version": "0.1.0", "source": {"dataset": "/data"},
             "cases": [], "stray_files": [], "dataset_problems": [],
             "summary": {"cases": n, "labeled": 0, "unlabeled": 0, "organ_full": 0,
                         "organ_partial": 0, "organ_none": 0, "tumor": 0, "no_tumor": 0,
                         "problems": 0, "groups": {g: 0 for g in GROUPS}}}
    for k, case in enumerate(cases):
        group = GROUPS[k % len(GROUPS)]
        organs = list(ORGANS) if group == "13_organs" else [1, 2, 3, 4, 13] if group.startswith(
            "5_") else []
        labeled = group != "unlabeled"
        audit["cases"].append({
            "id": case, "labeled": labeled, "organs": organs, "tumor": "tumor" in group,
            "organ_category": "full" if len(organs) == 13 else "partial" if organs else "none",
            "group": group, "n_classes": len(organs) + ("tumor" in group), "problems": []})
        audit["summary"]["groups"][group] += 1
    (root / "audit.json").write_text(json.dumps(audit))
    dsc = rng.uniform(0.3, 0.98, size=(n, 14))
    worst = int(rng.integers(n))
    dsc[worst, :13] = 0.05
    with open(root / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", "name", "dsc", "nsd", "gt_voxels", "pred_voxels",
                    "annotated"])
        for k, case in enumerate(cases):
            for c in range(1, 15):
                w.writerow([case, c, LABELS[c], f"{dsc[k, c - 1]:.10g}",
                            f"{dsc[k, c - 1] * 0.9:.10g}", 1000 + c, 990 + c, 1])
    pseudo = root / "pseudo"
    pseudo.mkdir(exist_ok=True)
    with open(pseudo / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "score", "confidence", "agreement", "written",
                    *[f"volume_ml_{c}" for c in ORGANS]])
        for case in cases:
            score = rng.uniform(0.5, 1.0)
            w.writerow([case, f"{score:.4f}", f"{score:.4f}", "", 1,
                        *[f"{v:.3f}" for v in rng.uniform(1, 2000, 13)]])
    stats = {"schema_version": 1, "min_tumor_mm3": 100.0, "cases": []}
    for case in cases:
        lesions = int(rng.integers(0, 4))
        stats["cases"].append({
            "id": case,
            "classes": {str(c): {"voxels": 1000, "volume_ml": round(float(v), 3)}
                        for c, v in zip(range(1, 15), rng.uniform(1, 2000, 14), strict=True)},
            "lesions": [], "lesion_count": lesions,
            "tumor_burden_ml": round(float(rng.uniform(0, 50)) if lesions else 0.0, 3),
            "sum_long_axes_mm": round(float(rng.uniform(0, 90)) if lesions else 0.0, 2)})
    (root / "stats.json").write_text(json.dumps(stats))
    means = dsc[:, :13].mean(axis=1)
    return {"worst": case_id(worst), "dsc": {c: float(m) for c, m in zip(cases, means,
                                                                          strict=True)}}
