"""The FLARE label vocabulary, in one place: ids and names, the kinds and label patterns a
training case can have, and the checks of label values. Pure: no I/O.

Ids 0..14: 0 background, 1..13 the abdominal organs, 14 the pan-cancer tumor class.

NumPy loads on first use (``LR_SWAP``, the value checks), not on import: the CLI's option
definitions take their defaults from here, and ``flare --help`` stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

LABELS: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "right_kidney",
    3: "spleen",
    4: "pancreas",
    5: "aorta",
    6: "ivc",
    7: "right_adrenal",
    8: "left_adrenal",
    9: "gallbladder",
    10: "esophagus",
    11: "stomach",
    12: "duodenum",
    13: "left_kidney",
    14: "tumor",
}
ORGANS: tuple[int, ...] = tuple(range(1, 14))
TUMOR: int = 14
CLASSES: tuple[int, ...] = ORGANS + (TUMOR,)
MAX_LABEL: int = 14

#: The five organs of the most common FLARE23 partial pattern.
FIVE_ORGANS: tuple[int, ...] = (1, 2, 3, 4, 13)

#: Classes whose tubular shape makes FLARE score them only on the GT's axial extent.
TUBULAR: tuple[int, ...] = (5, 6, 10)

#: NSD tolerance per class in mm, from the official FLARE23 evaluation.
NSD_TOLERANCE_MM: dict[int, float] = {
    1: 5.0, 2: 3.0, 3: 3.0, 4: 5.0, 5: 2.0, 6: 2.0, 7: 2.0,
    8: 2.0, 9: 2.0, 10: 3.0, 11: 5.0, 12: 7.0, 13: 3.0, 14: 2.0,
}


#: Training kinds of a case after ``flare correct`` (StMt): fully labelled, corrected
#: pseudo-label, pseudo-label only.
KINDS: tuple[str, ...] = ("FL", "CPL", "PL")

#: What a training case can be: the kinds of ``flare correct`` plus those of an audit.
CASE_KINDS: tuple[str, ...] = (*KINDS, "partial", "unlabeled")

#: The label patterns an audit sorts cases into (FLARE23's partial-label patterns, StMt Fig. 1,
#: plus unlabeled and empty label maps).
GROUPS: tuple[str, ...] = (
    "unlabeled", "13_organs", "5_organs", "5_organs_tumor", "tumor_only", "other", "empty",
)

#: Default smallest tumor kept by post-processing: a sphere of about 5.8 mm diameter, below
#: the smallest lesions annotated in FLARE (about 60 voxels at 0.8 x 0.8 x 2.5 mm).
MIN_TUMOR_MM3: float = 100.0


#: Left/right organ pairs (right/left kidney, right/left adrenal): a left-right mirror of a
#: scan swaps them.
LR_PAIRS: tuple[tuple[int, int], ...] = ((2, 13), (7, 8))


@functools.cache
def _lr_swap() -> np.ndarray:
    import numpy as np

    lut = np.arange(256, dtype=np.int64)
    for a, b in LR_PAIRS:
        lut[a], lut[b] = b, a
    return lut


def __getattr__(name: str) -> Any:
    """``LR_SWAP``, the lookup FLARE id -> FLARE id after a left-right mirror (an int64 array
    of 256 entries), made on first use."""
    if name == "LR_SWAP":
        return _lr_swap()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def label_name(label: int) -> str:
    return LABELS.get(int(label), f"label_{int(label)}")


#: Names a dataset.json may give each FLARE class (lower case, letters and digits only):
#: FLARE's own, nnU-Net's and TotalSegmentator's spellings and the usual abbreviations.
NAME_ALIASES: dict[int, tuple[str, ...]] = {
    0: ("background", "bg"),
    1: ("liver",),
    2: ("rightkidney", "kidneyright", "rk", "kidneyr", "rkidney"),
    3: ("spleen",),
    4: ("pancreas",),
    5: ("aorta",),
    6: ("ivc", "inferiorvenacava", "postcava"),
    7: ("rightadrenal", "rightadrenalgland", "adrenalright", "adrenalglandright", "rag"),
    8: ("leftadrenal", "leftadrenalgland", "adrenalleft", "adrenalglandleft", "lag"),
    9: ("gallbladder",),
    10: ("esophagus", "oesophagus"),
    11: ("stomach",),
    12: ("duodenum",),
    13: ("leftkidney", "kidneyleft", "lk", "kidneyl", "lkidney"),
    14: ("tumor", "tumour", "lesion", "cancer", "pancancer"),
}
_BY_ALIAS = {a: i for i, names in NAME_ALIASES.items() for a in names}


def check_flare_labels(label_ids: Mapping[int, str]) -> list[str]:
    """Differences between a dataset's label ids and the FLARE schema (empty when compatible):
    ids outside 0..14, and a name FLARE knows under another id ('liver': 6), whose label
    maps would be read as another class. Names FLARE does not know are not judged."""
    import re

    problems = []
    for i, name in sorted(label_ids.items()):
        if i not in LABELS:
            problems.append(f"label id {i} ('{name}') is not a FLARE id (0..{MAX_LABEL})")
            continue
        flare_id = _BY_ALIAS.get(re.sub(r"[^a-z0-9]", "", name.lower()))
        if flare_id is not None and flare_id != i:
            problems.append(f"label '{name}' has id {i}, but FLARE's {LABELS[flare_id]} is "
                            f"{flare_id} (id {i} is {LABELS[i]})")
    return problems


def check_label_values(array: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """Validate label values; return (uint8 labels or None when unusable, problems).

    Non-integer values make the label unusable. Values outside 0..14 are reported and set to
    background in the returned array so the rest can still be counted.
    """
    import numpy as np

    problems: list[str] = []
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            return None, ["label has NaN/inf values"]
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            bad = np.unique(array[rounded != array])[:3]
            return None, ["label has non-integer values (e.g. "
                          + ", ".join(f"{float(v):.9g}" for v in bad) + ")"]
        array = rounded
    elif array.dtype.kind not in "iub":
        return None, [f"label has unsupported voxel type {array.dtype}"]
    lo, hi = array.min(), array.max()
    if lo < 0 or hi > MAX_LABEL:
        values = np.unique(array)
        bad = [int(v) for v in values if v < 0 or v > MAX_LABEL]
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        problems.append(f"label values outside 0..{MAX_LABEL}: {shown}")
        array = np.where((array < 0) | (array > MAX_LABEL), 0, array)
    return array.astype(np.uint8, copy=False), problems
