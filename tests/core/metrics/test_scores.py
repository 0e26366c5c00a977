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
