"""A stage's network pass: smoothing a 2-D stage's probabilities across slices."""

from types import SimpleNamespace

import numpy as np
import pytest

from flarecli.core.inference import stages as ST
from flarecli.core.inference.sure import SURE


def lesion_and_spot(slices: int, deep: int) -> np.ndarray:
    """Tumor-head probabilities (C=2, Z, Y, X): a lesion ``deep`` slices deep at p 0.95,
    and a texture spot the slice-by-slice network is as sure of, one slice deep."""
    p = np.zeros((2, slices, 8, 16), np.float32)
    mid = slices // 2
    p[1, mid - deep // 2:mid - deep // 2 + deep, 2:6, 2:6] = 0.95  # the lesion
    p[1, mid, 2:6, 10:14] = 0.95  # the spot
    p[0] = 1.0 - p[1]
    return p


def fake_stage(sigma_mm: float):
    geometry = SimpleNamespace(size_zyx=None, slice_sigma_mm=sigma_mm)
    return SimpleNamespace(stage=SimpleNamespace(geometry=geometry),
                           views=lambda tta: [()])


@pytest.mark.parametrize("slice_mm", [1.0, 2.5])
def test_a_two_d_stage_keeps_what_holds_across_slices(monkeypatch, slice_mm):
    deep = round(12.0 / slice_mm)  # a lesion 12 mm deep
    probs = lesion_and_spot(31, deep)
    monkeypatch.setattr(ST, "sliding_window", lambda ls, net_in, views: {"tumor": probs})
    mid = 15
    alone = ST.network_labels(fake_stage(0.0), None, False, sure={"tumor": 0.8},
                              slice_mm=slice_mm)
    assert alone["tumor"][mid, 3, 3] == 1 and alone["tumor"][mid, 3, 11] == 1
    assert alone["tumor" + SURE][mid, 3, 11] == 1  # each slice alone: the spot is sure
    smooth = ST.network_labels(fake_stage(3.0), None, False, sure={"tumor": 0.8},
                               slice_mm=slice_mm)
    labels, sure = smooth["tumor"], smooth["tumor" + SURE]
    assert not labels[:, :, 8:].any()  # the one-slice spot is gone ...
    assert labels[mid, 3, 3] == 1 and sure[mid, 3, 3] == 1  # ... the lesion stays, sure
    # the sigma is in mm, so a lesion keeps its depth in mm whatever the slice spacing
    assert abs(int(labels[:, 3, 3].sum()) - deep) <= 1
    # probabilities still sum to one per voxel, so the argmax is of a distribution
    summed = ST.across_slices(probs, 3.0 / slice_mm).sum(axis=0)
    assert np.allclose(summed, 1.0, atol=1e-5)


def test_without_the_slice_spacing_nothing_is_smoothed(monkeypatch):
    probs = lesion_and_spot(21, 5)
    monkeypatch.setattr(ST, "sliding_window", lambda ls, net_in, views: {"tumor": probs})
    labels = ST.network_labels(fake_stage(3.0), None, False)["tumor"]
    assert labels[10, 3, 11] == 1


def test_the_grid_slice_spacing_follows_the_resampling():
    # 40 slices of 2.5 mm resampled to 100 slices: 1 mm each; an empty grid has none
    assert ST.grid_slice_mm(np.zeros((100, 4, 4)), (40, 4, 4), (2.5, 1.0, 1.0)) == 1.0
    assert ST.grid_slice_mm(np.zeros((0, 4, 4)), (0, 4, 4), (2.5, 1.0, 1.0)) is None


def test_a_stage_is_given_its_own_slice_spacing_not_the_scans(monkeypatch):
    """The stage's slice axis is its orientation's first axis: a stage that reads the scan
    transposed (its slices along the scan's x, 3 mm) smooths by that spacing, resampled to
    its grid (10 x 3 mm over 20 slices: 1.5 mm), not by the scan's z spacing (1 mm)."""
    seen = {}
    stage_order = SimpleNamespace(spacing=lambda s: (s[2], s[1], s[0]), invert=lambda v: v)
    monkeypatch.setattr(ST, "prepare", lambda *a, **k: (np.zeros((20, 4, 4), np.float32),
                                                        (10, 4, 4), stage_order))

    def labels(ls, net_in, tta, stats=None, sure=None, slice_mm=None):
        seen["slice_mm"] = slice_mm
        return {"tumor": np.zeros(net_in.shape, np.uint8)}

    monkeypatch.setattr(ST, "network_labels", labels)
    out = ST.segment(SimpleNamespace(name="tumor"), None, None, (1.0, 2.0, 3.0), 0.0, False)
    assert seen["slice_mm"] == 1.5
    assert out["tumor"].shape == (10, 4, 4)
