"""Sure labels: a head's argmax where its softmax reaches a bar (a merge rule's
``replace_probability``), and the names of the graphs that compute them, which are part of a
compiled model's cache key. Below the backends, which all compute them the same way."""

from __future__ import annotations

import math

import numpy as np

#: Suffix of the key under which a head's sure labels are returned (Backend.labels).
SURE = ":sure"


def labels_kind(sure: dict[str, float] | None) -> str:
    """The name of the graph that returns the labels (and the sure labels of ``sure``):
    part of a compiled model's cache key."""
    if not sure:
        return "labels"
    return "labels+odds:" + ",".join(f"{h}={float(p)!r}" for h, p in sorted(sure.items()))


def sure_of_kind(kind: str) -> dict[str, float]:
    """The ``sure`` a :func:`labels_kind` name was made from."""
    if not kind.startswith("labels+odds:"):
        return {}
    pairs = (item.rsplit("=", 1) for item in kind.removeprefix("labels+odds:").split(","))
    return {h: float(p) for h, p in pairs}


def odds(probability: float) -> float:
    """The odds of the chosen class against the runner-up that make a label sure."""
    return probability / (1.0 - probability) if probability < 1.0 else math.inf


def sure_labels(logits, labels, probability: float):
    """``labels`` where the chosen class is at least ``odds(probability)`` times as likely
    as the runner-up, 0 elsewhere: the top two logits differ by at least the odds' log (for
    a two-class head exactly: its probability reaches ``probability``; for more classes a
    bound on it). A running top two over the classes, never the classes' probabilities nor
    a top-k's indices: traced into a graph, a 14-class 192^3 head's softmax sum held 400 MB of
    temporaries and a top-k 170 MB (torch tensors, or traced into a graph)."""
    import torch

    first, second = running_top2([logits[:, c] for c in range(logits.shape[1])])
    return torch.where(first - second >= math.log(odds(probability)), labels,
                       torch.zeros_like(labels))


def running_top2(planes):
    """(largest, second largest) of a list of equal-shape arrays, element-wise (NumPy or
    torch), holding two planes at a time."""
    if len(planes) < 2:
        raise ValueError("a head has at least two classes")
    from flarecli.core.inference import arrays as A

    if A.is_torch(planes[0]):
        import torch as xp
    else:
        xp = np
    first, second = xp.maximum(planes[0], planes[1]), xp.minimum(planes[0], planes[1])
    for x in planes[2:]:
        second = xp.maximum(second, xp.minimum(first, x))
        first = xp.maximum(first, x)
    return first, second


def sure_from_probabilities(probs, labels, probability: float):
    """The same test on a probability map (C, ...) (a sliding window's average; NumPy or
    torch): the top class at least ``odds(probability)`` times the runner-up."""
    from flarecli.core.inference import arrays as A

    first, second = running_top2([probs[c] for c in range(probs.shape[0])])
    with np.errstate(invalid="ignore"):  # inf * 0 at a bar of 1: never sure
        confident = A.to_numpy(first >= second * odds(probability))
    return np.where(confident, A.to_numpy(labels), 0).astype(A.to_numpy(labels).dtype)
