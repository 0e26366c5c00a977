"""Dice and Normalized Surface Dice (NSD), exactly as the FLARE challenge computes them.

Pure NumPy/SciPy: boolean masks in, floats out, no I/O.

Definitions (DeepMind ``surface-distance``, used by the official FLARE script):

* The surface of a mask is made of surface elements ("surfels") located at the corners of the
  voxel grid: every 2x2x2 neighbourhood whose 8 voxels are neither all inside nor all outside.
  Each surfel carries an area from the marching-cubes triangulation of its neighbourhood code,
  for the voxel spacing (:mod:`flarecli.core.metrics.surface_table`).
* Each surfel's distance to the other mask's surface is read from a Euclidean distance
  transform (in mm, with the spacing) of the other surface.
* ``NSD(tol) = (area of GT surfels within tol of the prediction surface + area of prediction
  surfels within tol of the GT surface) / (total GT area + total prediction area)``.

Axis order: the official script works on nibabel arrays, i.e. NIfTI voxel order (x, y, z).
flare arrays are [z, y, x]; the surfel codes depend on the axis order (the triangulation of
ambiguous neighbourhoods is not symmetric), so :func:`surface_distances` takes masks in
flare's [z, y, x] order with ``spacing_xyz`` and transposes the (cropped) masks internally.

All computations run on the bounding box of the union of both masks, which gives exactly the
whole-volume result: every surfel lies inside that box (plus the one-voxel rim the 2x2x2
neighbourhoods need), so the distance from a surfel to the nearest surfel of the other mask
is found inside the box too.

NSD only ever compares a distance with the tolerance, so :func:`normalized_surface_dice` does
not compute distances: it asks, for each surfel, whether a surfel of the other mask lies at
one of the voxel offsets whose distance is within the tolerance (:func:`within_tolerance`).
"Within" is decided by the official arithmetic -- the offset in voxels times the spacing in
float64, squared, summed over x, y, z in that order, square root, ``<= tolerance`` -- not by
exact arithmetic: the two differ exactly at the tolerance (spacing 0.8 x 0.8 x 1.2 mm, offset
(0, 2, 1) voxels: 2 mm in float64, a hair over 2 mm in exact arithmetic on those floats, and
inside for the official script). Where one surfel has, at the tolerance, nearest surfels that
this arithmetic puts on both sides of it, only the feature transform's choice decides, and
the feature transform is run.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from flarecli.core.metrics.surface_table import neighbour_code_to_area
from flarecli.core.preprocessing.boxes import nonzero_box

# Bit of each corner of a 2x2x2 neighbourhood, indexed [a, b, c] over the (x, y, z) voxel
# axes: the kernel DeepMind's code correlates the mask with.
_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)


@dataclass(frozen=True)
class SurfaceDistances:
    """Per-surfel distances (mm) to the other surface and surfel areas (mm^2)."""

    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    areas_pred: np.ndarray


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two boolean masks: ``2|G & P| / (|G| + |P|)``; NaN when both are empty."""
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(gt & pred)) / total


def neighbour_codes(mask_xyz: np.ndarray) -> np.ndarray:
    """8-bit neighbourhood code of every 2x2x2 neighbourhood, shape ``mask.shape + 1``.

    Equivalent to ``scipy.ndimage.correlate(mask, _KERNEL, mode='constant')`` on the mask
    padded with one zero at the high end of each axis, computed with 8 shifted adds.
    """
    padded = np.pad(mask_xyz.astype(np.uint8, copy=False), 1)
    n0, n1, n2 = (s + 1 for s in mask_xyz.shape)
    code = np.zeros((n0, n1, n2), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                code += padded[a:a + n0, b:b + n1, c:c + n2] * _KERNEL[a, b, c]
    return code


def _surface(mask_xyz: np.ndarray, spacing_xyz) -> tuple[np.ndarray, np.ndarray]:
    """(border mask over the code grid, area of each border element)."""
    code = neighbour_codes(mask_xyz)
    border = (code != 0) & (code != 255)
    areas = neighbour_code_to_area(tuple(float(s) for s in spacing_xyz))[code[border]]
    return border, areas


def _distances(border: np.ndarray, at: np.ndarray, spacing_xyz) -> np.ndarray:
    """``distance_transform_edt(~border, sampling=spacing)[at]``, bit for bit, without the
    full distance map: the feature transform gives each voxel its nearest ``border`` voxel,
    and only the voxels of ``at`` get their distance, by scipy's own arithmetic (offsets
    times spacing in float64, squared, summed over the axes in order, square root)."""
    if not border.any():
        return np.full(int(np.count_nonzero(at)), np.inf)
    nearest = ndimage.distance_transform_edt(~border, sampling=spacing_xyz,
                                             return_distances=False, return_indices=True)
    where = np.nonzero(at)
    d = np.empty((border.ndim, where[0].size))
    for axis, (index, step) in enumerate(zip(where, spacing_xyz, strict=True)):
        d[axis] = (nearest[axis][where] - index).astype(np.float64)
        d[axis] *= np.float64(step)
    np.multiply(d, d, d)
    return np.sqrt(np.add.reduce(d, axis=0))


def _offset_distances(offsets: np.ndarray, spacing_xyz) -> np.ndarray:
    """Distances (mm) of integer voxel offsets (3, n), by the arithmetic of scipy's
    ``distance_transform_edt`` and :func:`_distances`: each offset in float64 times its
    spacing, squared, summed over the axes in order, square root."""
    d = offsets.astype(np.float64)
    for axis, step in enumerate(spacing_xyz):
        d[axis] *= np.float64(step)
    np.multiply(d, d, d)
    return np.sqrt(np.add.reduce(d, axis=0))


#: Relative width, on distances, of the band around the tolerance within which two surfels
#: at the same true distance may be computed on both sides of it (rounding is about 1e-16;
#: the feature transform's own float comparisons choose a nearest surfel to about as much).
_TIE_BAND = 1e-9


@dataclass(frozen=True)
class _Ball:
    """The voxel offsets within a tolerance, nearest first."""

    offsets: np.ndarray  # (3, n) int64, x, y, z, by increasing distance
    inside: np.ndarray  # (n,) bool: distance <= tolerance, by the official arithmetic
    band: np.ndarray  # (n,) bool: distance within _TIE_BAND of the tolerance
    mixed: bool  # offsets of the band lie on both sides of the tolerance
    reach: tuple[int, int, int]  # largest |offset| per axis


@functools.lru_cache(maxsize=128)
def _ball(spacing_xyz: tuple[float, float, float], tolerance_mm: float) -> _Ball:
    tolerance = float(tolerance_mm)
    top = tolerance * (1 + 2 * _TIE_BAND)
    reach = tuple(int(np.floor(top / float(s))) + 1 for s in spacing_xyz)
    grids = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids]).astype(np.int64)
    distance = _offset_distances(offsets, spacing_xyz)
    keep = np.flatnonzero(distance <= top)
    keep = keep[np.argsort(distance[keep], kind="stable")]
    offsets, distance = offsets[:, keep], distance[keep]
    inside = distance <= tolerance
    band = np.abs(distance - tolerance) <= _TIE_BAND * tolerance
    mixed = bool(band.any() and inside[band].any() and not inside[band].all())
    return _Ball(offsets, inside, band, mixed, reach)  # type: ignore[arg-type]


def within_tolerance(border: np.ndarray, at: np.ndarray, spacing_xyz,
                     tolerance_mm: float) -> np.ndarray | None:
    """``distance_transform_edt(~border, sampling=spacing)[at] <= tolerance_mm``, exactly,
    without any distance transform.

    ``border`` and ``at`` are boolean arrays of one shape, ``spacing_xyz`` (mm) their axes'
    spacing. Returns one bool per voxel of ``at`` (``np.nonzero`` order): whether a voxel of
    ``border`` lies at an offset whose distance, by scipy's arithmetic, is within the
    tolerance. Offsets are tried nearest first, each on the voxels not yet matched, so a
    voxel costs as many lookups as the rank of its nearest border offset (all of them, a few
    hundred at most, when none is in reach). No ``border`` voxel: all False (the distance is
    infinite). Returns None when the answer is the feature transform's to choose: a voxel
    whose nearest ``border`` voxels lie at the tolerance (to ``_TIE_BAND``) and, by that
    arithmetic, on both sides of it; the caller then runs the transform.
    """
    n_at = int(np.count_nonzero(at))
    if n_at == 0 or not border.any():
        return np.zeros(n_at, bool)
    ball = _ball(tuple(float(s) for s in spacing_xyz), float(tolerance_mm))  # type: ignore
    padded = np.pad(border, [(r, r) for r in ball.reach])
    flat = padded.ravel()
    strides = np.array([n // padded.itemsize for n in padded.strides], np.int64)
    where = np.nonzero(at)
    position = sum((index + r) * stride for index, r, stride in
                   zip(where, ball.reach, strides, strict=True))
    steps = strides @ ball.offsets
    first = np.full(n_at, -1, np.int64)
    left = np.arange(n_at)
    for k, step in enumerate(steps):
        hit = flat[position + step]
        if hit.any():
            first[left[hit]] = k
            left, position = left[~hit], position[~hit]
            if left.size == 0:
                break
    found = first >= 0
    near = np.zeros(n_at, bool)
    near[found] = ball.inside[first[found]]
    if ball.mixed:
        tied = np.flatnonzero(found)[ball.band[first[found]]]
        if tied.size and _ties_disagree(flat, strides, ball, where, tied):
            return None
    return near


def _ties_disagree(flat, strides, ball: _Ball, where, tied: np.ndarray) -> bool:
    """Whether some voxel of ``tied`` has border voxels at offsets of the tie band on both
    sides of the tolerance."""
    position = sum((index[tied] + r) * stride for index, r, stride in
                   zip(where, ball.reach, strides, strict=True))
    band = np.flatnonzero(ball.band)
    hits = flat[position[:, None] + (strides @ ball.offsets[:, band])[None, :]]
    inside = ball.inside[band]
    some_in = (hits & inside).any(axis=1)
    some_out = (hits & ~inside).any(axis=1)
    return bool((some_in & some_out).any())


def _crop_surfaces(gt: np.ndarray, pred: np.ndarray, spacing_xyz):
    """(border, areas) of each mask on the code grid of their union's box, in (x, y, z)
    order; None when both are empty."""
    box = nonzero_box(gt | pred)
    if box is None:
        return None
    gt_xyz = np.ascontiguousarray(gt[box].transpose(2, 1, 0))
    pred_xyz = np.ascontiguousarray(pred[box].transpose(2, 1, 0))
    return _surface(gt_xyz, spacing_xyz), _surface(pred_xyz, spacing_xyz)


def surface_distances(gt: np.ndarray, pred: np.ndarray, spacing_xyz) -> SurfaceDistances:
    """Surfel distances and areas of two boolean masks given in flare's [z, y, x] order.

    ``spacing_xyz`` is in mm in NIfTI voxel order (x, y, z). Empty masks give empty arrays;
    when one mask is empty, the other's distances are +inf.
    """
    surfaces = _crop_surfaces(gt, pred, spacing_xyz)
    if surfaces is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)
    (border_gt, areas_gt), (border_pred, areas_pred) = surfaces
    # the two feature transforms release the GIL: run them at once
    with ThreadPoolExecutor(2) as pool:
        to_pred = pool.submit(_distances, border_pred, border_gt, spacing_xyz)
        to_gt = _distances(border_gt, border_pred, spacing_xyz)
        return SurfaceDistances(
            distances_gt_to_pred=to_pred.result(),
            distances_pred_to_gt=to_gt,
            areas_gt=areas_gt,
            areas_pred=areas_pred,
        )


def surface_dice(distances: SurfaceDistances, tolerance_mm: float) -> float:
    """NSD at a tolerance in mm; NaN when both surfaces are empty."""
    total = distances.areas_gt.sum() + distances.areas_pred.sum()
    if total == 0:
        return float("nan")
    overlap_gt = distances.areas_gt[distances.distances_gt_to_pred <= tolerance_mm].sum()
    overlap_pred = distances.areas_pred[distances.distances_pred_to_gt <= tolerance_mm].sum()
    return float((overlap_gt + overlap_pred) / total)


def normalized_surface_dice(
    gt: np.ndarray, pred: np.ndarray, spacing_xyz, tolerance_mm: float
) -> float:
    """NSD of two boolean [z, y, x] masks (see the module docstring); NaN when both are
    empty, 0 when one is. Bit for bit ``surface_dice(surface_distances(...))``: the same
    surfels, areas and summation order, and per surfel the same ``distance <= tolerance``
    (:func:`within_tolerance`)."""
    surfaces = _crop_surfaces(gt, pred, spacing_xyz)
    if surfaces is None:
        return float("nan")
    (border_gt, areas_gt), (border_pred, areas_pred) = surfaces
    total = areas_gt.sum() + areas_pred.sum()
    if total == 0:
        return float("nan")
    near_gt = within_tolerance(border_pred, border_gt, spacing_xyz, tolerance_mm)
    near_pred = within_tolerance(border_gt, border_pred, spacing_xyz, tolerance_mm)
    if near_gt is None or near_pred is None:
        return surface_dice(surface_distances(gt, pred, spacing_xyz), tolerance_mm)
    return float((areas_gt[near_gt].sum() + areas_pred[near_pred].sum()) / total)
