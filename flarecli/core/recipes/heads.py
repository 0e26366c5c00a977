"""A network head's classes, as lookups between FLARE ids and the head's own class indices.

In a recipe (:class:`flarecli.core.recipes.spec.Network`), ``heads`` maps a head name to its
classes: entry k is head class k + 1 (0 is background), a FLARE id or several merged into one
class. Labels stay FLARE ids until a loss or an output needs the head's classes, so one cached
case serves every head and stage, and inference maps each head's classes back to ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def head_lut(classes: Sequence[int | Sequence[int]]) -> np.ndarray:
    """uint8 lookup FLARE id -> head class: entry k of ``classes`` (a FLARE id, or several
    merged into one class) is class k + 1; every other id is background (0)."""
    lut = np.zeros(256, np.uint8)
    for k, entry in enumerate(classes, start=1):
        for c in (entry if isinstance(entry, Sequence) else (entry,)):
            lut[int(c)] = k
    return lut


def head_ids(classes: Sequence[int | Sequence[int]]) -> np.ndarray:
    """uint8 lookup head class -> FLARE id (0 for a class that merges several ids)."""
    ids = np.zeros(256, np.uint8)
    for k, entry in enumerate(classes, start=1):
        ids[k] = entry if isinstance(entry, int) else 0
    return ids


def every_class(classes: Sequence[int | Sequence[int]]) -> set[int]:
    """Every FLARE id a head predicts, merged entries included."""
    return {int(c) for entry in classes
            for c in (entry if isinstance(entry, Sequence) else (entry,))}


def plain_classes(classes: Sequence[int | Sequence[int]]) -> set[int]:
    """The FLARE ids a head predicts one by one (merged entries left out)."""
    return {int(c) for c in classes if isinstance(c, int)}
