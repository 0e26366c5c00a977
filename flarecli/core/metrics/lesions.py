"""Lesion-wise figures for the tumor class (14): which true lesions a prediction finds, and
what it finds that is not there.

Voxel DSC pools every tumor voxel of a case, so a missed small lesion hides behind a large
one found. The rules:

* A lesion is a 26-connected component of class 14 of at least ``min_lesion_mm3`` (physical
  volume: voxels times the product of the spacing). Smaller components are ignored in both
  the truth and the prediction: they are no lesion and no false positive, and their voxels
  take no part in matching or in a lesion's DSC.
* A predicted component matches a true lesion when they share at least 10 % of the voxels of
  the smaller of the two.
* A true lesion is detected when at least one predicted component matches it. A predicted
  component that matches no true lesion is a false positive. So a component that merges two
  lesions detects both and is no false positive, and a lesion split into two predicted
  pieces is one detection, neither piece a false positive.
* A detected lesion's DSC is taken against the union of the predicted components matching
  it, whole: a component merging two lesions counts against each of them.

Summary over cases (:func:`summarize_lesions`): sensitivity = detected / true lesions, pooled
over the cases (a case without true lesions adds nothing to it; its own sensitivity is None);
precision = predicted components matching a lesion / predicted components; F1 from the two;
false positives per case over every case scored. Undefined ratios (no true lesion, no
predicted component) are None, not 0 or 1. F1 is 0 where only one of its two is undefined: a
prediction with no component misses every lesion, one with no lesion to find is all false
positives; it is None only without lesions and without predicted components.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from flarecli.core.labels import MIN_TUMOR_MM3, TUMOR

#: A predicted component matches a true lesion when their overlap is at least this percentage
#: of the smaller one (compared in integers: no rounding at the edge).
MATCH_PERCENT = 10

#: Size bins of true lesions: < 1 ml, 1 to 10 ml (both included), > 10 ml.
SIZE_BINS: tuple[str, ...] = ("under_1ml", "1_to_10ml", "over_10ml")

_CONNECTIVITY = np.ones((3, 3, 3), bool)


@dataclass
class CaseLesions:
    """One case's lesions: the true ones (largest first) and the predicted components."""

    volumes_ml: list[float] = field(default_factory=list)  # per true lesion
    dscs: list[float | None] = field(default_factory=list)  # per true lesion; None: missed
    predicted: int = 0  # predicted components of at least the minimum size
    false_positives: int = 0  # of those, the ones matching no true lesion

    @property
    def true_lesions(self) -> int:
        return len(self.volumes_ml)

    @property
    def detected(self) -> int:
        return sum(d is not None for d in self.dscs)

    @property
    def missed(self) -> int:
        return self.true_lesions - self.detected

    @property
    def sensitivity(self) -> float | None:
        return self.detected / self.true_lesions if self.true_lesions else None

    def to_json(self) -> dict[str, Any]:
        return {
            "true_lesions": self.true_lesions,
            "detected": self.detected,
            "missed": self.missed,
            "predicted": self.predicted,
            "false_positives": self.false_positives,
            "sensitivity": self.sensitivity,
            "volumes_ml": [round(v, 4) for v in self.volumes_ml],
            "dscs": self.dscs,
        }


def _components(mask: np.ndarray, voxel_volume_mm3: float, min_lesion_mm3: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(component map with the kept components numbered 1..n, largest first and 0 for the
    rest, their voxel counts)."""
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    kept = np.flatnonzero(sizes * voxel_volume_mm3 >= min_lesion_mm3)
    kept = kept[kept > 0]
    kept = kept[np.argsort(-sizes[kept], kind="stable")]
    renumber = np.zeros(n + 1, np.int32)
    renumber[kept] = np.arange(1, kept.size + 1)
    return renumber[labels], sizes[kept]


def match_lesions(
    gt: np.ndarray,
    pred: np.ndarray,
    voxel_volume_mm3: float,
    min_lesion_mm3: float = MIN_TUMOR_MM3,
    box: tuple[slice, ...] | None = None,
) -> CaseLesions:
    """Lesion-wise result of two uint8 label maps ([z, y, x], one grid) for class 14.

    ``voxel_volume_mm3``: the product of the spacing. ``box``: a region holding every tumor
    voxel of both maps (None: the whole arrays); components are found inside it only, which
    gives the whole-volume components when it does hold them all. See the module docstring
    for the rules; both maps without tumor: no lesion, no false positive.
    """
    if box is not None:
        gt, pred = gt[box], pred[box]
    true, true_sizes = _components(gt == TUMOR, voxel_volume_mm3, min_lesion_mm3)
    found, found_sizes = _components(pred == TUMOR, voxel_volume_mm3, min_lesion_mm3)
    n_true, n_found = true_sizes.size, found_sizes.size
    both = (true > 0) & (found > 0)
    pairs = np.bincount(true[both].astype(np.int64) * (n_found + 1) + found[both],
                        minlength=(n_true + 1) * (n_found + 1))
    overlap = pairs.reshape(n_true + 1, n_found + 1)[1:, 1:]
    smaller = np.minimum(true_sizes[:, None], found_sizes[None, :])
    matches = (overlap > 0) & (overlap * 100 >= MATCH_PERCENT * smaller)
    dscs: list[float | None] = []
    for k in range(n_true):
        hit = matches[k]
        if not hit.any():
            dscs.append(None)
            continue
        inter, union_size = int(overlap[k, hit].sum()), int(found_sizes[hit].sum())
        dscs.append(2.0 * inter / (int(true_sizes[k]) + union_size))
    ml = voxel_volume_mm3 / 1000.0
    return CaseLesions(
        volumes_ml=[float(s) * ml for s in true_sizes],
        dscs=dscs,
        predicted=int(n_found),
        false_positives=int(np.count_nonzero(~matches.any(axis=0))),
    )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def size_bin(volume_ml: float) -> str:
    """The name of a true lesion's size bin (:data:`SIZE_BINS`)."""
    if volume_ml < 1.0:
        return SIZE_BINS[0]
    return SIZE_BINS[1] if volume_ml <= 10.0 else SIZE_BINS[2]


def summarize_lesions(cases: dict[str, CaseLesions], min_lesion_mm3: float) -> dict[str, Any]:
    """Lesion figures over the cases given (the ones scored whose truth annotates tumors).

    Sensitivities are pooled over lesions; None when there is no true lesion (of that size).
    ``fp_per_case``: false positives / cases (None without cases). Precision: predicted
    components matching a lesion / predicted components (None without any); F1 =
    2PR / (P + R): 0 when either is 0 or when one is undefined (lesions but no prediction, or
    predictions but no lesion), None only when both are undefined.
    """
    everything = list(cases.values())
    n_true = sum(c.true_lesions for c in everything)
    detected = sum(c.detected for c in everything)
    predicted = sum(c.predicted for c in everything)
    false_positives = sum(c.false_positives for c in everything)
    sensitivity = _ratio(detected, n_true)
    precision = _ratio(predicted - false_positives, predicted)
    if sensitivity is None and precision is None:
        f1 = None
    else:  # one of them undefined: the other is 0 (every lesion missed, or every one false)
        p, r = precision or 0.0, sensitivity or 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
    by_size: dict[str, dict[str, Any]] = {}
    for name in SIZE_BINS:
        flags = [d is not None for c in everything
                 for v, d in zip(c.volumes_ml, c.dscs, strict=True) if size_bin(v) == name]
        by_size[name] = {"lesions": len(flags), "detected": sum(flags),
                         "sensitivity": _ratio(sum(flags), len(flags))}
    large = [by_size[name] for name in SIZE_BINS[1:]]
    dscs = [d for c in everything for d in c.dscs if d is not None]
    return {
        "min_lesion_mm3": min_lesion_mm3,
        "cases": len(everything),
        "true_lesions": n_true,
        "detected": detected,
        "missed": n_true - detected,
        "predicted": predicted,
        "false_positives": false_positives,
        "sensitivity": sensitivity,
        "precision": precision,
        "f1": f1,
        "fp_per_case": _ratio(false_positives, len(everything)),
        "sensitivity_1ml_or_more": _ratio(sum(b["detected"] for b in large),
                                          sum(b["lesions"] for b in large)),
        "by_size": by_size,
        "dsc_detected_mean": float(np.mean(dscs)) if dscs else None,
        "per_case": {case: c.to_json() for case, c in cases.items()},
    }
