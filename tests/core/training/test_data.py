from collections import Counter

import numpy as np
import pytest

from flarecli.core.errors import InputError
from flarecli.core.training import data as D


def test_sampler_balances_kinds_and_is_reproducible():
    kinds = ["FL"] * 2 + ["CPL"] * 10 + ["PL"] * 30
    s = D.KindBalancedSampler(kinds, batch_size=3, steps=20, seed=1)
    batches = s.epoch(0)
    per_kind = Counter(kinds[i] for b in batches for i, _ in b)
    assert per_kind == {"FL": 20, "CPL": 20, "PL": 20}
    assert all({kinds[i] for i, _ in b} == {"FL", "CPL", "PL"} for b in batches)
    assert batches == D.KindBalancedSampler(kinds, 3, 20, seed=1).epoch(0)
    assert batches != s.epoch(1)
    assert batches != D.KindBalancedSampler(kinds, 3, 20, seed=1, rank=1).epoch(0)
    # batch of two with three kinds: equal proportions over the epoch
    two = D.KindBalancedSampler(kinds, 2, 30, seed=0).epoch(0)
    assert Counter(kinds[i] for b in two for i, _ in b) == {"FL": 20, "CPL": 20, "PL": 20}
    only_fl = D.KindBalancedSampler(["FL"] * 3, 2, 5, seed=0).epoch(0)
    assert all(i in (0, 1, 2) for b in only_fl for i, _ in b)


def test_validation_split():
    ids = [f"c{i}" for i in range(20)]
    candidates = {f"c{i}" for i in range(10)}
    tr, va = D.split_validation(ids, candidates, 0.2, 0)
    assert len(va) == 2 and set(va) <= candidates and len(tr) == 18
    assert D.split_validation(ids, candidates, 0.2, 0) == (tr, va)
    assert len(D.split_validation(ids[:3], set(ids[:3]), 0.1, 0)[1]) == 1
    assert D.split_validation(ids, candidates, 0.0, 0)[1] == []
    with pytest.raises(InputError, match="val_fraction"):
        D.split_validation(ids, candidates, 1.0, 0)


def test_patches_are_cut_and_padded():
    arrays = {"image": np.arange(4 * 5 * 6, dtype=np.float16).reshape(4, 5, 6),
              "label": np.ones((4, 5, 6), np.uint8), "roi": np.array([[0, 4], [0, 5], [0, 6]]),
              "foreground": np.array([[1, 2, 3]], np.int32), "fill": np.float32(-1)}
    patch = D.crop_patch(arrays["image"], np.array([-1, 0, 2]), (3, 3, 3), -1)
    assert patch.shape == (3, 3, 3) and (patch[0] == -1).all()
    assert patch[1, 0, 0] == arrays["image"][0, 0, 2]
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(400):  # the only labelled voxel is in every patch, at every position
        start = D.patch_start(arrays, rng, (3, 3, 3), foreground_fraction=1.0)
        offset = np.array([1, 2, 3]) - start
        assert ((offset >= 0) & (offset < 3)).all()
        offsets.add(tuple(offset))
    assert len(offsets) == 27

    class Geometry:
        size_zyx = None
        patch_zyx = (1, 4, 4)
        foreground_fraction = 0.0
        focus: dict[str, float] = {}

    image, label = D.make_sample(arrays, 3, Geometry, None, "cpu")
    assert tuple(image.shape) == (1, 1, 4, 4) and tuple(label.shape) == (1, 4, 4)


def test_box_grid_maps_the_box_onto_the_output():
    import torch
    import torch.nn.functional as F

    src = torch.arange(8.0).reshape(1, 1, 8, 1, 1).expand(1, 1, 8, 4, 4).contiguous()
    grid = D.box_grid(np.array([[2.0, 6.0], [0, 4], [0, 4]]), (8, 4, 4), (4, 4, 4), "cpu")
    out = F.grid_sample(src, grid, mode="nearest", align_corners=False)
    assert out[0, 0, :, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_a_cache_entry_reads_back_exactly_with_its_large_arrays_mapped(tmp_path):
    from flarecli.core.training.cache import MAP_AT_BYTES, load_cached, save_cached

    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(40, 50, 60)).astype(np.float16),
              "label": rng.integers(0, 15, (40, 50, 60)).astype(np.uint8),
              "fortran": np.asfortranarray(rng.normal(size=(90, 100))),
              "roi": np.array([[1, 30], [2, 40], [3, 50]], np.int64),
              "unit_per_hu": np.float64(0.01)}
    save_cached(tmp_path / "case.npz", arrays)
    back = load_cached(tmp_path / "case.npz")
    assert set(back) == set(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        assert np.array_equal(back[name], value)
        assert isinstance(back[name], np.memmap) == (value.nbytes >= MAP_AT_BYTES)
    assert not back["image"].flags.writeable  # the cache is never written through a sample
    assert D.crop_patch(back["image"], np.array([5, 6, 7]), (2, 3, 4), -1).flags.writeable


def test_a_dataset_keeps_few_cases_open_and_samples_as_a_fresh_read(tmp_path, monkeypatch):
    from flarecli.core.training import feed as F
    from flarecli.core.training.cache import load_cached, save_cached

    class Geometry:
        size_zyx = None
        patch_zyx = (1, 4, 4)
        foreground_fraction = 0.5
        focus = None

    class Stage:
        geometry = Geometry

    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        label = rng.integers(0, 3, (5, 9, 9)).astype(np.uint8)
        save_cached(tmp_path / f"c{i}.npz", {
            "image": rng.normal(size=(5, 9, 9)).astype(np.float16), "label": label,
            "roi": np.array([[0, 5], [0, 9], [0, 9]]), "fill": np.float32(0),
            "foreground": np.argwhere(label > 0).astype(np.int32)})
        paths.append(tmp_path / f"c{i}.npz")
    monkeypatch.setattr(F, "OPEN_CASES", 2)
    feed = F.Feed({}, None, None, None, 2, 0, False)
    samples = F.Samples(paths, Stage, feed, prepare=True)
    for index, seed in [(0, 5), (1, 6), (0, 7), (2, 8), (1, 9), (0, 5)]:
        image, label = samples[(index, seed)]
        fresh = D.make_sample(load_cached(paths[index]), seed, Geometry, None, "cpu")
        assert np.array_equal(image.numpy(), fresh[0].numpy())
        assert np.array_equal(label.numpy(), fresh[1].numpy())
        assert len(samples._open) <= 2 and index in samples._open
    assert all(not a.flags.writeable for case in samples._open.values() for a in case.values())
    assert samples.arrays(0) is samples.arrays(0)


def test_a_cache_entry_follows_its_scan_as_well_as_its_label(tmp_path):
    """An entry made of an older scan is never reused: a scan replaced under the same name
    (labels unchanged) gives another key, and so does a slice added to a DICOM folder."""
    import os

    from flarecli.core.preprocessing.intensity import Intensity
    from flarecli.core.recipes.load import load_recipe
    from flarecli.core.training.cache import cache_key

    stage = load_recipe("stmt", "smoke").stages["tumor"]
    window = Intensity("window", -160.0, 240.0)
    image, label = tmp_path / "a_0000.nii.gz", tmp_path / "a.nii.gz"
    image.write_bytes(b"scan one")
    label.write_bytes(b"label")
    before = cache_key(stage, window, image, label)
    assert cache_key(stage, window, image, label) == before
    image.write_bytes(b"scan two")
    os.utime(image, ns=(1, 1))
    assert cache_key(stage, window, image, label) != before
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"slice")
    one = cache_key(stage, window, series, label)
    (series / "2.dcm").write_bytes(b"slice")
    assert cache_key(stage, window, series, label) != one
