"""Resampling of volumes in NumPy: images linearly, label maps by nearest neighbour -- never
logits, which would cost gigabytes at full resolution.

The grids are PyTorch's (``F.interpolate`` with ``align_corners=False``; ``nearest-exact`` for
labels), so a network sees what it was trained on whichever runtime runs it: output voxel
``i`` of ``m`` samples the input of ``n`` voxels at ``(i + 0.5) * n / m - 0.5``. Trilinear
interpolation is separable, so it runs one axis at a time, the axis that shrinks the volume
most first; no torch is imported (a cached OpenVINO run never loads it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flarecli.core.runtime import usable_cpus


def _grid(n: int, m: int) -> np.ndarray:
    """Where ``m`` output voxels sample an axis of ``n`` input voxels, in float32 as torch
    computes it (``(i + 0.5) * (n / m)``, before the half-voxel shift of linear)."""
    return (np.arange(m, dtype=np.float32) + np.float32(0.5)) * np.float32(n / m)


def nearest_index(n: int, m: int) -> np.ndarray:
    """Input voxel of each of ``m`` output voxels (``nearest-exact``: the centre's)."""
    return np.minimum(np.floor(_grid(n, m)), n - 1).astype(np.intp)


def _linear_weights(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower input voxel, upper input voxel, weight of the upper) of each output voxel."""
    src = np.maximum(_grid(n, m) - np.float32(0.5), np.float32(0.0))  # torch clamps at 0
    lo = np.minimum(np.floor(src).astype(np.intp), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (src - lo).astype(np.float32)


def _linear_axis(a: np.ndarray, axis: int, lo, hi, w) -> np.ndarray:
    shape = [1] * a.ndim
    shape[axis] = len(w)
    low = np.take(a, lo, axis=axis)
    out = np.take(a, hi, axis=axis)
    out -= low
    out *= w.reshape(shape)
    out += low
    return out


def _linear_block(a: np.ndarray, size, rows: slice, weights) -> np.ndarray:
    """Output rows ``rows`` (axis 0) of the trilinear resampling of ``a`` to ``size``."""
    lo, hi, w = (v[rows] for v in weights[0])  # rows is never empty (see _slabs)
    first = int(lo.min())
    block = a[first:int(hi.max()) + 1]
    out = _linear_axis(block.astype(np.float32, copy=False), 0, lo - first, hi - first, w)
    # then the other axes, the one that shrinks the volume most first
    for axis in sorted((1, 2), key=lambda k: size[k] / a.shape[k]):
        if out.shape[axis] != size[axis]:
            out = _linear_axis(out, axis, *weights[axis])
    return out


def resample(array: np.ndarray, size_zyx, mode: str) -> np.ndarray:
    """Resample a 3-D array to ``size_zyx``.

    ``mode``: 'linear' (trilinear, float32 result) or 'nearest' (dtype kept; used for label
    maps, never for logits). Slabs of the output are computed in threads (NumPy's gathers
    and arithmetic release the GIL), one per usable CPU.
    """
    a = np.asarray(array)
    size = tuple(int(s) for s in size_zyx)
    if mode not in ("linear", "nearest"):
        raise ValueError(f"unknown resampling mode {mode}")
    if a.shape == size:
        return a.astype(np.float32) if mode == "linear" else a
    if mode == "nearest":
        index = [nearest_index(n, m) for n, m in zip(a.shape, size, strict=True)]
        out = np.empty(size, a.dtype)

        def fill(rows: slice) -> None:
            out[rows] = a[index[0][rows]][:, index[1]][:, :, index[2]]
    else:
        weights = [_linear_weights(n, m) for n, m in zip(a.shape, size, strict=True)]
        out = np.empty(size, np.float32)

        def fill(rows: slice) -> None:
            out[rows] = _linear_block(a, size, rows, weights)
    slabs = _slabs(size[0], usable_cpus())
    if len(slabs) == 1:
        fill(slabs[0])
    else:
        with ThreadPoolExecutor(len(slabs)) as pool:
            list(pool.map(fill, slabs))
    return out


def _slabs(n: int, parts: int) -> list[slice]:
    edges = np.linspace(0, n, min(max(1, parts), n) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def size_at_spacing(shape_zyx, spacing_zyx, target_zyx) -> tuple[int, int, int]:
    """Voxels per axis of a region of ``shape_zyx`` at ``spacing_zyx`` resampled to
    ``target_zyx`` (an entry None keeps that axis's own spacing)."""
    out = []
    for n, s, t in zip(shape_zyx, spacing_zyx, target_zyx, strict=True):
        out.append(int(n) if t is None else max(1, int(round(n * float(s) / float(t)))))
    return tuple(out)  # type: ignore[return-value]
