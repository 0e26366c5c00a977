"""Resampling of volumes (torch, on the tensor's device): images linearly, label maps by
nearest neighbour -- never logits, which would cost gigabytes at full resolution."""

from __future__ import annotations

import numpy as np


def resample(array, size_zyx, mode: str):
    """Resample a 3-D numpy array or torch tensor to ``size_zyx``.

    ``mode``: 'linear' (trilinear, float32 result) or 'nearest' (dtype kept; used for label
    maps, never for logits). Returns a torch tensor on the input's device.
    """
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(array) if isinstance(array, np.ndarray) else array
    size = tuple(int(s) for s in size_zyx)
    if tuple(t.shape) == size:
        return t.float() if mode == "linear" else t
    if mode == "linear":
        return F.interpolate(t.float()[None, None], size=size, mode="trilinear",
                             align_corners=False)[0, 0]
    if mode == "nearest":
        src = t if t.dtype == torch.uint8 else t.float()
        out = F.interpolate(src[None, None], size=size, mode="nearest-exact")[0, 0]
        return out.to(t.dtype)
    raise ValueError(f"unknown resampling mode {mode}")


def size_at_spacing(shape_zyx, spacing_zyx, target_zyx) -> tuple[int, int, int]:
    """Voxels per axis of a region of ``shape_zyx`` at ``spacing_zyx`` resampled to
    ``target_zyx`` (an entry None keeps that axis's own spacing)."""
    out = []
    for n, s, t in zip(shape_zyx, spacing_zyx, target_zyx, strict=True):
        out.append(int(n) if t is None else max(1, int(round(n * float(s) / float(t)))))
    return tuple(out)  # type: ignore[return-value]

