"""Boxes in voxel coordinates: [start, stop) per array axis (z, y, x), and the crops, pads and
pastes that use them. A box may reach outside its array (a padded region); ``crop`` fills what
lies outside, ``paste`` writes only what lies inside.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from flarecli.core.preprocessing.connected import largest_component

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # [(start, stop)] per z, y, x


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask as slices, or None when it is empty."""
    if mask.size == 0:
        return None
    boxes = ndimage.find_objects(mask.astype(np.uint8, copy=False))
    return boxes[0] if boxes and boxes[0] is not None else None


def nonzero_box(array: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels of an array (a label map or a boolean mask)
    as slices, or None when there are none. A 3-D array takes two ``any`` reductions, a third
    of the time of ``find_objects`` on an organ's box; a C-contiguous one-byte array whose
    rows hold a multiple of 8 voxels is read 8 voxels at a time along x (the same
    zero-ness)."""
    if array.ndim != 3 or array.size == 0:
        return bounding_box(array != 0)
    rows = array
    if array.flags.c_contiguous and array.itemsize == 1 and array.shape[2] % 8 == 0:
        rows = array.view(np.uint64)
    zy = rows.any(axis=2)
    z = np.flatnonzero(zy.any(axis=1))
    if z.size == 0:
        return None
    y = np.flatnonzero(zy.any(axis=0))
    x = np.flatnonzero(array[z[0]:z[-1] + 1, y[0]:y[-1] + 1].any(axis=(0, 1)))
    return tuple(slice(int(v[0]), int(v[-1]) + 1) for v in (z, y, x))


def label_counts(labels: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength)`` of a non-negative integer map, counted
    inside the bounding box of its non-zero voxels (found by one ``any`` reduction per axis):
    on a 512 x 512 x 300 output with an abdomen-sized box 0.13 s instead of 0.5-0.8 s, and no
    int64 copy of the whole map."""
    box = []
    for axis in range(labels.ndim):
        others = tuple(a for a in range(labels.ndim) if a != axis)
        found = np.flatnonzero(labels.any(axis=others)) if labels.size else np.zeros(0, int)
        if found.size == 0:
            counts = np.zeros(max(minlength, 1), np.int64)
            counts[0] = labels.size
            return counts
        box.append(slice(int(found[0]), int(found[-1]) + 1))
    inner = labels[tuple(box)]
    counts = np.bincount(inner.ravel(), minlength=minlength)
    counts[0] += labels.size - inner.size
    return counts


def box_of(mask: np.ndarray) -> Box | None:
    """Tight [start, stop) box of a mask, or None when empty."""
    found = bounding_box(mask)
    return None if found is None else tuple((s.start, s.stop) for s in found)  # type: ignore


def whole(shape) -> Box:
    return tuple((0, int(s)) for s in shape)  # type: ignore[return-value]


def expand_box(box: Box, margin_vox, shape) -> Box:
    """Grow a box by per-axis margins (voxels), clipped to the array shape."""
    return tuple((max(0, a - int(m)), min(int(n), b + int(m)))
                 for (a, b), m, n in zip(box, margin_vox, shape, strict=True))  # type: ignore


def margin_voxels(margin_mm: float, spacing_zyx) -> tuple[int, int, int]:
    return tuple(int(np.ceil(margin_mm / s)) for s in spacing_zyx)  # type: ignore[return-value]


def pad_to_aspect(box: Box, spacing_zyx, size_zyx) -> Box:
    """Grow a box symmetrically (possibly beyond the array) until its physical extent has the
    aspect ratio of ``size_zyx``, so resampling it to that size scales every axis alike."""
    extent = np.array([(b - a) * s for (a, b), s in zip(box, spacing_zyx, strict=True)])
    size = np.asarray(size_zyx, dtype=np.float64)
    scale = float(np.max(extent / size))
    target = size * scale / np.asarray(spacing_zyx, dtype=np.float64)  # voxels per axis
    out = []
    for (a, b), t in zip(box, target, strict=True):
        grow = max(0, int(np.ceil(t)) - (b - a))
        out.append((a - grow // 2, b + grow - grow // 2))
    return tuple(out)  # type: ignore[return-value]


def body_box(image: np.ndarray, threshold_hu: float = -500.0) -> Box:
    """Box of the largest connected region above ``threshold_hu`` (the patient's body)."""
    body = largest_component(image > threshold_hu, connectivity=6)
    if body is None:
        return whole(image.shape)
    return box_of(body)  # type: ignore[return-value]


def inside(box: Box, shape) -> bool:
    return all(0 <= a and b <= n for (a, b), n in zip(box, shape, strict=True))


def crop(array: np.ndarray, box: Box, fill: float = 0) -> np.ndarray:
    """``array[box]``; the parts of a box outside the array are ``fill``."""
    if inside(box, array.shape):
        return array[tuple(slice(a, b) for a, b in box)]
    out = np.full(tuple(b - a for a, b in box), fill, array.dtype)
    src = tuple(slice(max(0, a), min(n, b)) for (a, b), n in zip(box, array.shape, strict=True))
    dst = tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(src, box, strict=True))
    if all(s.stop > s.start for s in src):
        out[dst] = array[src]
    return out


def paste(target: np.ndarray, values: np.ndarray, box: Box, labelled_only: bool = False
          ) -> None:
    """Write ``values`` (the box's shape) into ``target``: only the part inside it, and with
    ``labelled_only`` only where ``values`` > 0 (an overlay)."""
    src = tuple(slice(max(0, a), min(n, b)) for (a, b), n in zip(box, target.shape, strict=True))
    if any(s.stop <= s.start for s in src):
        return
    part = values[tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(src, box,
                                                                         strict=True))]
    if labelled_only:
        np.copyto(target[src], part, where=part > 0)
    else:
        target[src] = part
