"""DSC / NSD on masks with analytically known answers, and against the whole-volume reference."""

import numpy as np
import pytest
from scipy import ndimage

from flarecli.core.metrics.scores import (
    dice,
    neighbour_codes,
    normalized_surface_dice,
    surface_distances,
)
from tests.reference import KERNEL, reference_nsd


def cube(shape, lo, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = True
    return m


def test_neighbour_codes_equal_scipy_correlate():
    rng = np.random.default_rng(0)
    m = rng.random((7, 8, 9)) > 0.6
    padded = np.zeros((8, 9, 10), np.uint8)
    padded[:-1, :-1, :-1] = m
    expected = ndimage.correlate(padded, KERNEL, mode="constant", cval=0)
    assert np.array_equal(neighbour_codes(m), expected)


def test_identical_masks():
    m = cube((20, 20, 20), (5, 5, 5), (8, 6, 7))
    assert dice(m, m) == 1.0
    assert normalized_surface_dice(m, m, (0.8, 0.8, 2.5), 0.0) == 1.0


def test_disjoint_masks():
    a = cube((30, 30, 30), (2, 2, 2), (5, 5, 5))
    b = cube((30, 30, 30), (20, 20, 20), (5, 5, 5))
    assert dice(a, b) == 0.0
    assert normalized_surface_dice(a, b, (1, 1, 1), 5.0) == 0.0


def test_empty_masks():
    e = np.zeros((10, 10, 10), bool)
    m = cube((10, 10, 10), (2, 2, 2), (3, 3, 3))
    assert np.isnan(dice(e, e))
    assert np.isnan(normalized_surface_dice(e, e, (1, 1, 1), 1.0))
    assert normalized_surface_dice(m, e, (1, 1, 1), 100.0) == 0.0
    d = surface_distances(m, e, (1, 1, 1))
    assert np.all(np.isinf(d.distances_gt_to_pred)) and d.areas_pred.size == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_offset_cubes_dice_is_known(k):
    n = 10
    a = cube((30, 30, 30), (5, 5, 5), (n, n, n))
    b = cube((30, 30, 30), (5, 5, 5 + k), (n, n, n))
    assert dice(a, b) == pytest.approx((n - k) / n)


@pytest.mark.parametrize("axis,spacing_along", [(0, 2.5), (1, 0.8), (2, 0.7)])
@pytest.mark.parametrize("k", [1, 2])
def test_offset_cubes_nsd_switches_exactly_at_the_offset_distance(axis, spacing_along, k):
    # arrays are [z, y, x]; spacing_xyz = (0.7, 0.8, 2.5) so axis 0 has 2.5 mm, axis 2 0.7 mm
    spacing_xyz = (0.7, 0.8, 2.5)
    lo = [6, 6, 6]
    a = cube((30, 30, 30), lo, (12, 12, 12))
    lo[axis] += k
    b = cube((30, 30, 30), lo, (12, 12, 12))
    distance = k * spacing_along
    assert normalized_surface_dice(a, b, spacing_xyz, distance) == 1.0
    below = normalized_surface_dice(a, b, spacing_xyz, distance - 1e-6)
    assert 0.0 < below < 1.0


def test_surface_area_follows_spacing_per_axis():
    # a flat plate, thin along array axis 0 (z): its big faces are x-y planes
    plate = cube((12, 40, 40), (5, 5, 5), (2, 30, 30))
    d1 = surface_distances(plate, plate, (1.0, 1.0, 1.0))
    d2 = surface_distances(plate, plate, (1.0, 1.0, 4.0))  # thicker slices: z spacing 4
    d3 = surface_distances(plate, plate, (4.0, 1.0, 1.0))  # wider x
    a1, a2, a3 = d1.areas_gt.sum(), d2.areas_gt.sum(), d3.areas_gt.sum()
    # x-y faces (2 * 30 * 30) keep their area when z spacing grows; rim faces grow 4x
    assert a2 < 1.5 * a1
    # when x spacing grows the x-y faces grow 4x
    assert a3 > 3.0 * a1
    # a big cube's area approaches the geometric one (marching cubes chamfers its edges)
    c = cube((40, 40, 40), (5, 5, 5), (30, 30, 30))
    area = surface_distances(c, c, (0.5, 1.0, 2.0)).areas_gt.sum()
    exact = 2 * 30 * 30 * (0.5 * 1.0 + 0.5 * 2.0 + 1.0 * 2.0)
    assert 0.9 * exact < area <= exact


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_whole_volume_reference_on_random_shapes(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(12, 30, size=3))
    spacing_xyz = tuple(float(v) for v in rng.uniform(0.5, 3.0, size=3))

    def blob():
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        return field > np.quantile(field, rng.uniform(0.6, 0.95))

    a, b = blob(), blob()
    b |= np.roll(a, rng.integers(-2, 3), axis=int(rng.integers(0, 3)))
    for tol in (0.0, 1.0, 2.5, 5.0):
        fast = normalized_surface_dice(a, b, spacing_xyz, tol)
        slow = reference_nsd(a.transpose(2, 1, 0), b.transpose(2, 1, 0), spacing_xyz, tol)
        assert fast == pytest.approx(slow, abs=1e-12)


def test_distances_at_surfels_are_scipys_distance_map_bit_for_bit():
    """NSD reads distances only at the other surface's surfels, from the feature transform;
    they must be exactly the values of scipy's full distance map there (the official code's),
    for real-world spacings, sparse and dense borders."""
    from scipy import ndimage

    from flarecli.core.metrics.scores import _distances

    rng = np.random.default_rng(0)
    spacings = [0.5, 0.6640625, 0.7, 0.78125, 0.8, 1.0, 1.25, 1.5, 2.5, 3.0, 5.0]
    checked = 0
    for _ in range(120):
        shape = tuple(int(n) for n in rng.integers(3, 24, 3))
        spacing = tuple(float(s) for s in rng.choice(spacings, 3))
        border = rng.random(shape) < rng.choice([0.002, 0.02, 0.2])
        at = rng.random(shape) < 0.3
        got = _distances(border, at, spacing)
        if not border.any():
            assert np.isinf(got).all() and got.size == at.sum()
            continue
        want = ndimage.distance_transform_edt(~border, sampling=spacing)[at]
        assert np.array_equal(got, want), (shape, spacing)
        checked += 1
    assert checked > 100


def test_within_tolerance_is_scipys_distance_map_compared_with_the_tolerance():
    """The same 120 random grids, sparse and dense borders: for the FLARE tolerances and
    for tolerances equal to distances that occur (so that surfels lie exactly at them), the
    flags equal ``distance_transform_edt(~border, sampling)[at] <= tol``."""
    from scipy import ndimage

    from flarecli.core.metrics.scores import within_tolerance

    rng = np.random.default_rng(0)
    spacings = [0.5, 0.6640625, 0.7, 0.78125, 0.8, 1.0, 1.25, 1.5, 2.5, 3.0, 5.0]
    compared = undecided = 0
    for _ in range(120):
        shape = tuple(int(n) for n in rng.integers(3, 24, 3))
        spacing = tuple(float(s) for s in rng.choice(spacings, 3))
        border = rng.random(shape) < rng.choice([0.002, 0.02, 0.2])
        at = rng.random(shape) < 0.3
        if not border.any():
            assert not within_tolerance(border, at, spacing, 2.0).any()
            continue
        want = ndimage.distance_transform_edt(~border, sampling=spacing)[at]
        occurring = rng.choice(np.unique(want), 4)
        for tol in (0.0, 2.0, 3.0, 5.0, 7.0, *occurring):
            got = within_tolerance(border, at, spacing, float(tol))
            if got is None:
                undecided += 1
                continue
            assert np.array_equal(got, want <= tol), (shape, spacing, tol)
            compared += 1
    assert compared > 900 and undecided < compared / 100


def one_voxel(shape_xyz, *voxels_xyz):
    m = np.zeros(shape_xyz, bool)
    for v in voxels_xyz:
        m[v] = True
    return m


@pytest.mark.parametrize("spacing,offset,tol,inside", [
    # 2 mm in float64 (1.6^2 + 1.2^2), a hair over 2 mm exactly on those floats: inside
    ((0.8, 0.8, 1.2), (0, 2, 1), 2.0, True),
    # exactly 3 mm in decimals, 3.0000000000000004 in float64: outside, as for scipy
    ((0.8, 0.8, 1.8), (0, 3, 1), 3.0, False),
    ((1.0, 1.0, 1.0), (2, 0, 0), 2.0, True),  # exact in any arithmetic
    ((0.5, 0.5, 2.5), (0, 0, 2), 5.0, True),
])
def test_within_tolerance_at_exactly_the_tolerance(spacing, offset, tol, inside):
    from scipy import ndimage

    from flarecli.core.metrics.scores import within_tolerance

    at = one_voxel((12, 12, 12), (1, 1, 1))
    border = one_voxel((12, 12, 12), tuple(1 + o for o in offset))
    want = ndimage.distance_transform_edt(~border, sampling=spacing)[at]
    assert bool(want[0] <= tol) is inside
    assert within_tolerance(border, at, spacing, tol).tolist() == [inside]


def test_ties_on_both_sides_of_the_tolerance_are_left_to_the_feature_transform():
    """At 0.4 x 0.4 x 0.5 mm, offsets (0, 0, 6) and (1, 7, 2) are both 3 mm exactly, but
    float64 puts the first at 3.0 and the second at 3.0000000000000004: which one scipy's
    feature transform picks decides the flag, so within_tolerance declines and the NSD runs
    the transform; with one of them alone it decides."""
    from flarecli.core.metrics.scores import _crop_surfaces, surface_dice, within_tolerance

    spacing, tol = (0.4, 0.4, 0.5), 3.0
    at = one_voxel((12, 12, 12), (1, 1, 1))
    both = one_voxel((12, 12, 12), (1, 1, 7), (2, 8, 3))
    assert within_tolerance(both, at, spacing, tol) is None
    assert within_tolerance(one_voxel((12, 12, 12), (1, 1, 7)), at, spacing, tol).tolist() \
        == [True]
    assert within_tolerance(one_voxel((12, 12, 12), (2, 8, 3)), at, spacing, tol).tolist() \
        == [False]
    # the same tie between surfels: a voxel, and two voxels at (1, 1, 7) and (2, 8, 3) from it
    gt_xyz = one_voxel((16, 16, 16), (2, 2, 2))
    pred_xyz = one_voxel((16, 16, 16), (3, 3, 9), (4, 10, 5))
    gt, pred = gt_xyz.transpose(2, 1, 0), pred_xyz.transpose(2, 1, 0)
    (border_gt, _), (border_pred, _) = _crop_surfaces(gt, pred, spacing)
    assert within_tolerance(border_pred, border_gt, spacing, tol) is None
    assert normalized_surface_dice(gt, pred, spacing, tol) == surface_dice(
        surface_distances(gt, pred, spacing), tol)


@pytest.mark.parametrize("seed", range(6))
def test_nsd_is_bit_for_bit_the_distance_based_one(seed):
    from flarecli.core.metrics.scores import surface_dice

    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(v) for v in rng.integers(12, 30, size=3))
    spacing_xyz = tuple(float(v) for v in rng.choice([0.5, 0.8, 1.0, 1.2, 2.5], 3))

    def blob():
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        return field > np.quantile(field, rng.uniform(0.6, 0.95))

    a, b = blob(), blob()
    distances = surface_distances(a, b, spacing_xyz)
    for tol in (0.0, 1.0, 2.0, 3.0, 5.0, 7.0):
        assert normalized_surface_dice(a, b, spacing_xyz, tol) == surface_dice(distances, tol)


def test_box_is_the_tight_bounding_box():
    from flarecli.core.preprocessing.boxes import bounding_box, nonzero_box

    rng = np.random.default_rng(3)
    for i in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 12, 3))
        if i % 2:  # rows of a multiple of 8 voxels: read 8 at a time
            shape = shape[:2] + (8 * int(rng.integers(1, 3)),)
        m = np.zeros(shape, bool)
        for _ in range(int(rng.integers(0, 3))):
            m[tuple(int(rng.integers(0, n)) for n in m.shape)] = True
        assert nonzero_box(m) == bounding_box(m)
        labels = m.astype(np.uint8) * np.uint8(rng.integers(1, 15))
        assert nonzero_box(labels) == bounding_box(m)
