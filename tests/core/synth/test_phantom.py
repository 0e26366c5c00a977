"""Tests for the phantom rendering core (known answers: layout, HU ranges, grid ranges)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from flarecli.core.synth import anatomy
from flarecli.core.synth import case as C
from flarecli.core.synth import phantom as P
from flarecli.core.synth.paint import render_layers
from flarecli.core.synth.scan import z_coarsening
from flarecli.core.synth.shapes import index_to_physical

ALL_ORGANS = set(range(1, 14))


@lru_cache(maxsize=64)
def _case(
    seed: int,
    size: int = 96,
    direction: str | None = None,
    n_tumors: int | None = None,
    z_extent: str | None = None,
) -> tuple[C.CaseSpec, NDArray[np.int16], NDArray[np.uint8]]:
    spec = anatomy.sample_case_spec(
        np.random.default_rng(seed), size, n_tumors=n_tumors, z_extent=z_extent, direction=direction
    )
    img, lab = P.render_case(spec)
    return spec, img, lab


def _centroids(spec: C.CaseSpec, lab: NDArray[np.uint8]) -> dict[int, NDArray[np.float64]]:
    """LPS centroid (mm) of every label present."""
    out = {}
    for lid in np.unique(lab):
        if lid == 0:
            continue
        kji = np.argwhere(lab == lid).astype(np.float64)
        out[int(lid)] = index_to_physical(spec.grid, kji).mean(axis=0)
    return out


def test_determinism() -> None:
    s1 = anatomy.sample_case_spec(np.random.default_rng(11), 96)
    s2 = anatomy.sample_case_spec(np.random.default_rng(11), 96)
    assert s1 == s2
    i1, l1 = P.render_case(s1)
    i2, l2 = P.render_case(s2)
    assert np.array_equal(i1, i2) and np.array_equal(l1, l2)
    s3 = anatomy.sample_case_spec(np.random.default_rng(12), 96)
    i3, l3 = P.render_case(s3)
    assert s3 != s1
    assert i3.shape != i1.shape or not np.array_equal(i1, i3)


def test_render_twice_same_spec_identical() -> None:
    spec, img, lab = _case(3)
    img2, lab2 = P.render_case(spec)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)


@pytest.mark.parametrize("seed", range(8))
def test_all_organs_present(seed: int) -> None:
    spec, img, lab = _case(seed)
    assert ALL_ORGANS <= set(np.unique(lab).tolist())
    assert img.dtype == np.int16 and lab.dtype == np.uint8
    assert img.shape == lab.shape == spec.grid.shape_zyx


@pytest.mark.parametrize("direction", list(C.DIRECTIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_organs_and_layout_every_direction(direction: str, seed: int) -> None:
    spec, _, lab = _case(seed, direction=direction)
    assert spec.grid.direction == C.DIRECTIONS[direction]
    assert ALL_ORGANS <= set(np.unique(lab).tolist())
    c = _centroids(spec, lab)
    x, z = 0, 2
    assert c[1][x] < 0 < c[3][x], "liver on patient right, spleen on patient left"
    assert c[2][x] < 0 < c[13][x], "right kidney at -x, left kidney at +x"
    assert c[5][x] > c[6][x], "aorta left of IVC"
    assert c[7][z] > c[2][z] and c[8][z] > c[13][z], "adrenals above their kidneys"
    assert c[1][z] > c[9][z], "liver above gallbladder"
    assert c[7][x] < 0 < c[8][x]
    assert c[11][x] > 0, "stomach on the left"


def test_same_anatomy_across_directions() -> None:
    """Same rng draws with a different direction: organ centroids agree in physical space."""
    cents = []
    for d in C.DIRECTIONS:
        spec, _, lab = _case(5, direction=d)
        cents.append(_centroids(spec, lab))
    for lid in (1, 2, 3, 5, 13):
        pts = np.array([c[lid] for c in cents])
        assert np.ptp(pts, axis=0).max() < 8.0, (lid, pts)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_tumor_count(n: int, seed: int) -> None:
    spec, _, lab = _case(100 + seed, n_tumors=n)
    assert len(spec.tumor_hosts) == n
    assert sum(p.label == C.TUMOR_ID for p in spec.parts) == n
    assert (C.TUMOR_ID in np.unique(lab)) == (n > 0)


def test_tumor_hosts_mostly_organs() -> None:
    hosts = []
    for seed in range(60):
        spec = anatomy.sample_case_spec(np.random.default_rng(seed), 96, n_tumors=3)
        hosts.extend(spec.tumor_hosts)
    frac = np.mean([h in C.TUMOR_HOSTS for h in hosts])
    assert 0.75 < frac < 0.95


def test_tumor_inside_host() -> None:
    """Organ-hosted tumors lie (mostly) inside their host organ as rendered without tumors."""
    checked = 0
    for seed in range(10):
        spec, _, lab = _case(200 + seed, size=128, n_tumors=1)
        host = spec.tumor_hosts[0]
        if host == 0:
            continue
        bare = replace(spec, parts=tuple(p for p in spec.parts if p.label != C.TUMOR_ID))
        _, lab0 = P.render_case(bare)
        tum = lab == C.TUMOR_ID
        near = ndimage.binary_dilation(lab0 == host, iterations=1)
        assert tum.sum() > 0
        assert (tum & near).sum() >= 0.9 * tum.sum()
        # the tumor replaced host voxels only where it is painted
        assert np.array_equal(lab[~tum], lab0[~tum])
        checked += 1
    assert checked >= 5


def test_hu_statistics() -> None:
    for seed in (0, 1, 2, 3):
        spec = anatomy.sample_case_spec(np.random.default_rng(seed), 96)
        label, tissue = render_layers(spec)
        img, lab2 = P.render_case(spec)
        assert np.array_equal(label, lab2)
        core = ndimage.binary_erosion(tissue == C.Tissue.SUBQ_FAT, iterations=1)
        fat = img[core | (ndimage.binary_erosion(tissue == C.Tissue.VISC_FAT))]
        assert -130 < fat.mean() < -70
        assert (img > 300).sum() > 50, "bone present"
        assert img.max() > 300
        st = np.ones((1, 3, 3), dtype=bool)  # in-plane erosion keeps interiors
        aorta = img[ndimage.binary_erosion(lab2 == 5, st)]
        liver = img[ndimage.binary_erosion(lab2 == 1, st)]
        assert aorta.size > 0 and liver.size > 0
        assert aorta.mean() > liver.mean()
        assert 60 < liver.mean() < 150
        assert img.min() >= -1024 and img.max() <= 3071
        outside = ndimage.binary_erosion(tissue == C.Tissue.AIR, iterations=2)
        assert abs(float(np.median(img[outside])) + 1000.0) < 10.0


@pytest.mark.parametrize("size", [96, 512])
def test_grid_ranges(size: int) -> None:
    zf = z_coarsening(size)
    for seed in range(40):
        spec = anatomy.sample_case_spec(np.random.default_rng(seed), size)
        g = spec.grid
        sx, sy, sz = g.spacing_xyz
        assert sx == sy
        assert 0.6 * 512 / size - 1e-9 <= sx <= 1.0 * 512 / size + 1e-9
        assert 1.0 * zf - 1e-9 <= sz <= 5.0 * zf + 1e-9
        assert g.shape_zyx[1:] == (size, size)
        assert g.direction in C.DIRECTIONS.values()
        # z coverage (physical) contains the abdominal core
        corners = index_to_physical(g, np.array([[0, 0, 0], [g.shape_zyx[0] - 1, 0, 0]]))
        zmin, zmax = corners[:, 2].min(), corners[:, 2].max()
        assert zmin <= -80.0 * spec.scale and zmax >= 100.0 * spec.scale
        assert zmax - zmin == pytest.approx(sz * (g.shape_zyx[0] - 1))


@pytest.mark.parametrize("ext", C.Z_EXTENTS)
def test_z_extent(ext: str) -> None:
    spec = anatomy.sample_case_spec(np.random.default_rng(7), 96, z_extent=ext)
    lo, hi = spec.z_range
    assert (hi > 200.0) == ("chest" in ext)
    assert (lo < -170.0) == ("pelvis" in ext)


def test_chest_has_lung_and_pelvis_has_bone() -> None:
    spec = anatomy.sample_case_spec(np.random.default_rng(9), 96, z_extent="chest+pelvis")
    _, tissue = render_layers(spec)
    assert (tissue == C.Tissue.LUNG).sum() > 1000
    g = spec.grid
    kji = np.argwhere(tissue == C.Tissue.CORTEX)
    z = index_to_physical(g, kji.astype(np.float64))[:, 2]
    assert (z < -180.0 * spec.scale).sum() > 20, "pelvic bone"


def test_invalid_args() -> None:
    with pytest.raises(ValueError):
        anatomy.sample_case_spec(np.random.default_rng(0), 96, n_tumors=C.MAX_TUMORS + 1)
    with pytest.raises(ValueError):
        anatomy.sample_case_spec(np.random.default_rng(0), 96, z_extent="head")


def test_chunking_and_threads_do_not_change_output(monkeypatch: pytest.MonkeyPatch) -> None:
    spec, img, lab = _case(4, size=64, n_tumors=2)
    monkeypatch.setattr(P, "_CHUNK_VOXELS", 3000)  # many chunks / slabs
    for threads in (1, 3):
        img2, lab2 = P.render_case(spec, threads=threads)
        assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
