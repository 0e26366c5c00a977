"""stats, preview, the API and DICOM on the real CT of ../shared/data (skipped without it)."""

import json

import numpy as np
import pytest

import flarecli
from flarecli.core.io.nifti import read_volume


def test_stats_preview_and_evaluate_on_the_real_ct(shared_ct, tmp_path, run_cli):
    image, label = shared_ct
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "ts.nii.gz").symlink_to(label)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ts_0000.nii.gz").symlink_to(image)
    res = run_cli("stats", tmp_path / "labels", "--images", tmp_path / "images", "--json",
                  tmp_path / "s.json")
    assert res.code == 0, res.stderr
    case = json.loads((tmp_path / "s.json").read_text())["cases"][0]
    labels, g = read_volume(label)
    ct, _ = read_volume(image)
    for c, entry in case["classes"].items():
        mask = labels == int(c)
        assert entry["voxels"] == int(mask.sum())
        assert entry["volume_ml"] == pytest.approx(mask.sum() * g.voxel_volume_mm3 / 1000,
                                                   abs=1e-3)
        assert entry["hu_mean"] == pytest.approx(float(ct[mask].mean()), abs=0.01)
    assert "1" in case["classes"] and 20 < case["classes"]["1"]["hu_mean"] < 200  # liver HU
    res = run_cli("preview", tmp_path / "labels", tmp_path / "images", tmp_path / "png")
    assert res.code == 0 and (tmp_path / "png" / "ts.png").is_file()
    scores = flarecli.evaluate(label, label)
    present = {int(c) for c in case["classes"]}
    assert all(scores[c]["dsc"] == 1.0 and scores[c]["nsd"] == 1.0 for c in present)


def test_the_real_ct_as_a_dicom_series_reads_back_the_same(shared_ct, tmp_path):
    pytest.importorskip("pydicom")
    from flarecli.core.io.dicom import find_series, read_series
    from tests.core.io.test_dicom import write_series

    image, _ = shared_ct
    ct, g = read_volume(image)
    write_series(tmp_path / "dicom" / "ts", ct, g)
    series, problems = find_series(tmp_path / "dicom")
    assert problems == [] and len(series) == 1
    array, g2 = read_series(series[0].folder, series[0].uid)
    np.testing.assert_array_equal(array, ct)
    assert g2.mismatches(g) == []
