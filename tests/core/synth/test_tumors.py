"""The synthetic lesions follow the distribution the README states (FLARE's pan-cancer
lesions): 5 mm to 8 cm, 10-60 HU from their host, sometimes a rim, 0-4 per scan, in liver,
kidneys, pancreas, stomach and para-aortic nodes; most test scans hold one."""

from __future__ import annotations

import numpy as np

from flarecli.core.synth import anatomy
from flarecli.core.synth.case import TUMOR_ID
from flarecli.core.synth.dataset import CaseJob, case_seed, make_case
from flarecli.core.synth.tumors import _TUMOR_BASE, TUMOR_DIAMETER_MM


def lesions(n_specs: int, size: int = 96):
    """(host, radius mm along one axis, lesion HU, inner HU or None, host HU) of every lesion
    drawn."""
    found = []
    for seed in range(n_specs):
        spec = anatomy.sample_case_spec(np.random.default_rng(seed), size)
        tumors = [p for p in spec.parts if p.label == TUMOR_ID]
        assert len(tumors) == len(spec.tumor_hosts) <= 4
        for part, host in zip(tumors, spec.tumor_hosts, strict=True):
            inner = spec.hu[part.inner_tissue] if part.inner_tissue >= 0 else None
            found.append((host, part.shapes[0].radii[0], spec.hu[part.tissue], inner,
                          spec.hu[_TUMOR_BASE[host]]))
    return found


def test_sizes_hosts_and_contrast_follow_the_stated_distribution():
    drawn = lesions(300)
    assert {h for h, *_ in drawn} == {0, 1, 2, 4, 11, 13}
    diameters = np.array([2 * r for _, r, *_ in drawn])
    for host, r, hu, inner, base in drawn:
        lo, hi = TUMOR_DIAMETER_MM[host]
        # each axis of the drawn radius is jittered by up to 20 % (the organs' shape rule)
        assert 0.8 * 4.0 <= r <= 1.2 * max(hi / 2, 4.0) + 1e-9, (host, r)
        contrast = abs(hu - base)
        if host == 0:  # a node: 10-30 HU below the muscle beside it, or a rim-enhancing one
            assert 10.0 <= base - hu <= 30.0 or (inner is not None and 20.0 <= hu - base <= 60.0)
        else:
            assert 20.0 <= contrast <= 60.0, (host, hu, base)
    assert diameters.min() < 12.0 and diameters.max() > 50.0
    # a rim (brighter than the host) around a body darker than the host, in some large lesions
    rims = [(hu, inner, base) for host, r, hu, inner, base in drawn
            if host and inner is not None and hu > base and inner <= base - 20.0]
    large = [1 for host, r, *_ in drawn if host and r >= 10.0]
    assert 0.1 < len(rims) / len(large) < 0.5
    hypo = np.mean([hu < base for host, r, hu, inner, base in drawn if host == 1])
    assert 0.5 < hypo < 0.9  # most liver lesions are darker than the liver


def test_most_test_scans_hold_a_lesion(tmp_path):
    with_lesion = 0
    for index in range(10):
        job = CaseJob(str(tmp_path), "ts", index, f"t{index}", case_seed(3, "ts", index), 48,
                      None, overwrite=False)
        record = make_case(job)
        with_lesion += TUMOR_ID in record["truth_classes"]
    assert with_lesion >= 7

