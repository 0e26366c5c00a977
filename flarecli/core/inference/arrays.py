"""The few array operations the engine applies to a backend's outputs, for NumPy arrays and
torch tensors alike.

Between stages everything is NumPy. A backend returns its own kind: OpenVINO NumPy arrays,
torch tensors on its device (so that on a GPU the softmax, flips and TTA averaging stay
there). torch is imported only when a tensor is handed in, so a run whose networks are all
cached OpenVINO models never loads it (about 2 s of a fresh process).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x: Any) -> np.ndarray:
    """A CPU NumPy array of ``x`` (float tensors as float32)."""
    if not is_torch(x):
        return np.asarray(x)
    if x.is_floating_point():
        x = x.float()
    return x.detach().cpu().numpy()


def flip(x: Any, axes: list[int]) -> Any:
    if not axes:
        return x
    if is_torch(x):
        import torch

        return torch.flip(x, axes)
    return np.flip(x, axes)


def softmax(x: Any, axis: int = 1) -> Any:
    if is_torch(x):
        import torch

        return torch.softmax(x.float(), dim=axis)
    e = np.array(x, dtype=np.float32)  # a copy: exp works in place
    e -= e.max(axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def top(x: Any, axis: int = 0) -> Any:
    """The largest value along ``axis`` (a probability map's top class probability)."""
    if is_torch(x):
        return x.max(axis).values
    return np.max(x, axis=axis)


def argmax_labels(logits: Any) -> Any:
    """Argmax over the classes (axis 1) as uint8, the first class winning ties like
    ``torch.argmax``. On the CPU a running maximum over the classes: torch's reduction over an
    outer dimension takes 1.5 s for 14 x 192^3 on two cores, this loop 0.27 s."""
    if is_torch(logits):
        import torch

        if logits.device.type != "cpu" or logits.shape[1] == 1:
            return logits.argmax(1).to(torch.uint8)
        best = logits[:, 0].clone()
        out = torch.zeros(best.shape, dtype=torch.uint8)
        for c in range(1, logits.shape[1]):
            higher = logits[:, c] > best
            out[higher] = c
            torch.maximum(best, logits[:, c], out=best)
        return out
    logits = np.asarray(logits)
    best = logits[:, 0].copy()
    out = np.zeros(best.shape, np.uint8)
    for c in range(1, logits.shape[1]):
        higher = logits[:, c] > best
        out[higher] = c
        np.maximum(best, logits[:, c], out=best)
    return out
