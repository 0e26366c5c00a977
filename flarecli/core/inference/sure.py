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
    bound on it). Two logits per voxel, never the classes' probabilities: a 14-class 192^3
    head would hold 400 MB more for them (torch tensors, or traced into a graph)."""
    import torch

    top2 = torch.topk(logits, 2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    return torch.where(margin >= math.log(odds(probability)), labels, torch.zeros_like(labels))


def sure_from_probabilities(probs, labels, probability: float):
    """The same test on a probability map (C, ...) (a sliding window's average; NumPy or
    torch): the top class at least ``odds(probability)`` times the runner-up."""
    from flarecli.core.inference import arrays as A

    if A.is_torch(probs):
        import torch

        top2 = torch.topk(probs, 2, dim=0).values
        first, second = top2[0], top2[1]
    else:  # a running top two over the classes: no copy of the (C, ...) map
        first = np.maximum(probs[0], probs[1])
        second = np.minimum(probs[0], probs[1])
        for c in range(2, probs.shape[0]):
            np.maximum(second, np.minimum(first, probs[c]), out=second)
            np.maximum(first, probs[c], out=first)
    with np.errstate(invalid="ignore"):  # inf * 0 at a bar of 1: never sure
        confident = A.to_numpy(first >= second * odds(probability))
    return np.where(confident, A.to_numpy(labels), 0).astype(A.to_numpy(labels).dtype)
