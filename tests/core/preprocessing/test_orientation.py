import itertools

import numpy as np
import pytest

from flarecli.core.preprocessing.orientation import to_canonical


def stored_from_canonical(canon, perm, signs):
    """The array a scanner would store for the canonical volume ``canon`` ([z, y, x] of an
    identity-direction scan) with voxel axis v along physical axis perm[v], sign signs[v]."""
    n = [canon.shape[2 - perm[v]] for v in range(3)]  # voxel sizes (i, j, k)
    k, j, i = np.meshgrid(*[np.arange(n[2]), np.arange(n[1]), np.arange(n[0])], indexing="ij")
    idx = [i, j, k]
    phys = [None, None, None]
    for v in range(3):
        phys[perm[v]] = idx[v] if signs[v] > 0 else n[v] - 1 - idx[v]
    direction = np.zeros((3, 3))
    for v in range(3):
        direction[perm[v], v] = signs[v]
    return canon[phys[2], phys[1], phys[0]], direction.ravel()


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_every_storage_reaches_the_same_canonical_array(perm):
    canon = np.random.default_rng(0).random((4, 5, 6))
    for signs in itertools.product([1, -1], repeat=3):
        stored, direction = stored_from_canonical(canon, perm, signs)
        r = to_canonical(direction)
        assert np.array_equal(r.apply(stored), canon), signs
        assert np.array_equal(r.invert(r.apply(stored)), stored)
        assert np.array_equal(r.view(stored), canon)  # the same, without a copy
        written = np.zeros_like(stored)
        r.view(written)[...] = canon  # labels painted in canonical order land as stored
        assert np.array_equal(written, stored)
        assert r.spacing(tuple(stored.shape)) == tuple(float(s) for s in canon.shape)


def test_oblique_direction_uses_the_closest_axes():
    a = np.radians(20)
    d = [np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, -1]
    r = to_canonical(d)
    assert r.perm == (0, 1, 2) and r.flips == (True, False, False)
    assert to_canonical(np.eye(3).ravel()).identity


@pytest.mark.parametrize("degrees", [45.0, -45.0, 135.0])
def test_an_oblique_tie_is_broken_by_the_physical_directions_not_the_storage(degrees):
    """At exactly 45 degrees in-plane two axis assignments fit equally well. Taking the first
    in storage order sent the same scan, stored with its x and y axes swapped, to a
    different canonical array (49 % of the labels agreed); the tie now goes to the
    assignment whose axes point most along the physical ones, whatever the storage."""
    a = np.radians(degrees)
    d = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    scan = np.random.default_rng(1).random((3, 4, 5))  # [z, y, x]
    swapped = np.transpose(scan, (0, 2, 1))  # voxel axes x and y exchanged ...
    d_swapped = d[:, [1, 0, 2]]  # ... and their directions with them: the same anatomy
    assert np.array_equal(to_canonical(d.ravel()).apply(scan),
                          to_canonical(d_swapped.ravel()).apply(swapped))


def test_torch_tensors_too():
    import torch

    r = to_canonical([0, 0, -1, 1, 0, 0, 0, 1, 0])
    x = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(r.apply(torch.as_tensor(x)).numpy(), r.apply(x))
    assert np.array_equal(r.invert(torch.as_tensor(r.apply(x))).numpy(), x)
