"""Sure labels: a head's argmax where its softmax reaches a bar (a merge rule's
``replace_probability``), and the names of the graphs that compute them, which are part of a
compiled model's cache key. Below the backends, which all compute them the same way."""

from __future__ import annotations

#: Suffix of the key under which a head's sure labels are returned (Backend.labels).
SURE = ":sure"


def labels_kind(sure: dict[str, float] | None) -> str:
    """The name of the graph that returns the labels (and the sure labels of ``sure``):
    part of a compiled model's cache key."""
    if not sure:
        return "labels"
    return "labels+sure:" + ",".join(f"{h}={float(p)!r}" for h, p in sorted(sure.items()))


def sure_of_kind(kind: str) -> dict[str, float]:
    """The ``sure`` a :func:`labels_kind` name was made from."""
    if not kind.startswith("labels+sure:"):
        return {}
    pairs = (item.rsplit("=", 1) for item in kind.removeprefix("labels+sure:").split(","))
    return {h: float(p) for h, p in pairs}


def sure_labels(logits, labels, probability: float):
    """``labels`` where the softmax of ``logits`` (B, C, ...) gives the chosen class at least
    ``probability``, 0 elsewhere: max softmax >= p  <=>  sum(exp(l - max l)) <= 1 / p, which
    needs no division and no second pass over the classes' probabilities (torch tensors)."""
    import torch

    top = logits.max(1, keepdim=True).values
    total = torch.exp(logits - top).sum(1)
    return torch.where(total <= 1.0 / probability, labels, torch.zeros_like(labels))
