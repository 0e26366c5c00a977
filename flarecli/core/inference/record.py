"""The run record of ``infer`` and ``pseudolabel``: each scan's result, the profile summary,
and the record kept across runs into one folder (``OUTPUT/<command>.json``).

Several runs into one output folder (``imagesTr`` then ``imagesUn``, or shards) keep one
complete record: a run merges its scans into the earlier entries, and refuses a folder whose
outputs another model made.
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import InputError
from flarecli.core.labels import ORGANS


@dataclass
class ScanResult:
    case: str
    image: str
    output: str
    series_uid: str | None = None  # DICOM input: the series segmented
    skipped: bool = False
    error: str | None = None
    rejected: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    agreement: float | None = None
    volumes_ml: dict[int, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)  # seconds of every compute step
    peak_rss_mb: float | None = None  # sampled while the scan was computed
    cpu_area_pct_s: float | None = None  # area under the CPU-utilisation curve
    cpu_utilisation_pct: float | None = None
    gpu_peak_mb: float | None = None
    gpu_max_used_mb: float | None = None
    gpu_area_mb_s: float | None = None
    #: DICOM SEG output: what the SEG took from elsewhere for attributes the series lacks
    #: (``io.dicom.seg_sources``), by attribute
    dicom_filled: dict[str, Any] | None = None
    #: how the scan's header placed it in the patient, when a user should know
    #: (:attr:`flarecli.core.io.geometry.Geometry.note`)
    geometry_note: str | None = None

    @property
    def score(self) -> float | None:
        """Pseudo-label quality: confidence x TTA agreement (agreement 1 without TTA)."""
        if self.confidence is None:
            return None
        return self.confidence * (self.agreement if self.agreement is not None else 1.0)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["score"] = self.score
        d["volumes_ml"] = {str(k): v for k, v in self.volumes_ml.items()}
        return d


def written(scan: dict[str, Any]) -> bool:
    """Whether a run record's scan (``ScanResult.to_json``) has a NIfTI output on disk."""
    return (not scan.get("error") and not scan.get("rejected")
            and scan["output"].endswith(".nii.gz") and Path(scan["output"]).is_file())


def profile_summary(results: list[ScanResult]) -> dict[str, Any]:
    """Per-scan profile plus means (the ``--profile`` JSON)."""
    done = [r for r in results if not r.skipped and not r.error and not r.rejected]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "scans": [r.to_json() for r in results],
        "summary": {
            "scans": len(done),
            "mean_seconds": {k: mean(r.seconds.get(k) for r in done)
                             for k in ("read", "compute", "write", "total")},
            "max_gpu_peak_mb": max((r.gpu_peak_mb for r in done if r.gpu_peak_mb), default=None),
            "mean_steps": {k: mean(r.steps.get(k) for r in done)
                           for k in dict.fromkeys(k for r in done for k in r.steps)},
            "mean_gpu_area_mb_s": mean(r.gpu_area_mb_s for r in done),
            "mean_cpu_area_pct_s": mean(r.cpu_area_pct_s for r in done),
            "max_scan_rss_mb": max((r.peak_rss_mb for r in done if r.peak_rss_mb),
                                   default=None),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }


def check_same_outputs(record_path: Path, made: dict[str, Any]) -> None:
    """Refuse to add to a folder whose outputs another model or other settings made
    (``made``: the run record's ``model_sha256`` -- each stage's weights' SHA-256 -- and the
    settings that change a label; :func:`flarecli.core.io.outputs.check_made_alike`)."""
    from flarecli.core.io.outputs import check_made_alike

    hint = ("choose another output folder, or --overwrite to redo every output with this "
            "model and these settings")
    try:
        before = json.loads(record_path.read_text()).get("model_sha256")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(before, dict) and before and before != made["model_sha256"]:
        raise InputError(f"{record_path.parent}: holds outputs of another model "
                         f"(see {record_path.name})", hint=hint)
    check_made_alike(record_path, {k: v for k, v in made.items() if k != "model_sha256"},
                     hint)


def recorded_scans(record_path: Path) -> dict[str, dict[str, Any]]:
    """Case -> its entry in an earlier run record of the folder ({} when there is none)."""
    if not record_path.is_file():
        return {}
    try:
        return {s["case"]: s for s in json.loads(record_path.read_text())["scans"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def folder_scans(folder: Path, command: str) -> dict[str, dict[str, Any]]:
    """Case -> its entry in any run record of ``command`` in ``folder``: the unsharded one
    and every shard's (``infer.shard-2-of-8.json``), a later-written record winning, so that
    a run finds the scores of cases that other shards wrote."""
    records = sorted(Path(folder).glob(f"{command}.shard-*-of-*.json"))
    records.append(Path(folder) / f"{command}.json")
    found: list[tuple[float, dict[str, dict[str, Any]]]] = []
    for path in records:
        try:
            found.append((path.stat().st_mtime, recorded_scans(path)))
        except OSError:
            continue
    out: dict[str, dict[str, Any]] = {}
    for _, scans in sorted(found, key=lambda f: f[0]):
        for case, entry in scans.items():
            if not entry.get("skipped") or case not in out:
                out[case] = entry
    return out


def merge_scans(record_path: Path, results: list[ScanResult]) -> list[dict[str, Any]]:
    """This run's scans plus the earlier runs' entries for the other (or skipped) cases, so
    several runs into one folder (e.g. imagesTr then imagesUn) keep one complete record."""
    earlier = recorded_scans(record_path)
    for r in results:
        if not (r.skipped and r.case in earlier):
            earlier[r.case] = r.to_json()
    return [earlier[k] for k in sorted(earlier)]


def scores_table(record: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``scores.csv`` of a pseudolabel run: every case of the folder (this run's and earlier
    ones), its quality score and predicted organ volumes."""
    header = ["case", "score", "confidence", "agreement", "written",
              *[f"volume_ml_{c}" for c in ORGANS]]

    def f(v):
        return "" if v is None else f"{v:.4f}"

    rows = []
    for r in record["scans"]:
        volumes = r.get("volumes_ml", {})
        rows.append([r["case"], f(r.get("score")), f(r.get("confidence")),
                     f(r.get("agreement")), int(not (r.get("rejected") or r.get("error"))),
                     *[volumes.get(str(c), "") for c in ORGANS]])
    return header, rows
