import json

import numpy as np
import pytest

from flarecli.core.curation.correct import correct, supplement
from flarecli.core.io.nifti import write_volume
from tests.conftest import geom


def test_correction_rule():
    pseudo = np.array([1, 1, 2, 3, 0, 13, 4, 0], np.uint8)
    partial = np.array([0, 1, 0, 0, 2, 0, 14, 0], np.uint8)  # annotates liver, kidney, tumor
    out = correct(pseudo, partial)
    # liver/kidney voxels of the teacher are dropped unless annotated; annotations win
    assert out.tolist() == [0, 1, 0, 3, 2, 13, 14, 0]
    assert np.array_equal(out, supplement(partial, pseudo))


def test_empty_partial_label_keeps_the_pseudo_label():
    pseudo = np.array([1, 2, 3], np.uint8)
    assert correct(pseudo, np.zeros(3, np.uint8)).tolist() == [1, 2, 3]


@pytest.mark.parametrize("seed", range(5))
def test_equivalent_to_seed_004_supplement_rule(seed):
    rng = np.random.default_rng(seed)
    pseudo = rng.integers(0, 14, (12, 12, 12)).astype(np.uint8)
    partial = np.where(rng.random((12, 12, 12)) < 0.3, rng.choice([0, 1, 4, 14], (12, 12, 12)),
                       0).astype(np.uint8)
    assert np.array_equal(correct(pseudo, partial), supplement(partial, pseudo))


def test_cli_correct_kinds_manifest_and_errors(tmp_path, run_cli):
    g = geom((6, 6, 6))
    rng = np.random.default_rng(0)
    full = rng.integers(0, 14, g.shape_zyx).astype(np.uint8)
    full.flat[:13] = np.arange(1, 14)  # every organ present
    pseudo = rng.integers(0, 14, g.shape_zyx).astype(np.uint8)
    partial = np.where(pseudo == 1, 1, 0).astype(np.uint8)
    partial[0, 0, 0] = 14
    for case in ("fl", "cpl", "pl", "bad"):
        write_volume(tmp_path / "img" / f"{case}_0000.nii.gz", np.zeros(g.shape_zyx, np.int16),
                     g)
    write_volume(tmp_path / "labels" / "fl.nii.gz", full, g)
    write_volume(tmp_path / "labels" / "cpl.nii.gz", partial, g)
    write_volume(tmp_path / "pseudo" / "cpl.nii.gz", pseudo, g)
    write_volume(tmp_path / "pseudo" / "pl.nii.gz", pseudo, g)
    write_volume(tmp_path / "labels" / "bad.nii.gz", partial, g)
    write_volume(tmp_path / "pseudo" / "bad.nii.gz", pseudo, geom((6, 6, 6), spacing_xyz=(2, 1,
                                                                                          1)))
    res = run_cli("correct", tmp_path / "pseudo", tmp_path / "labels", tmp_path / "out",
                  "--images", tmp_path / "img")
    assert res.code == 4 and "error: bad: pseudo-label vs image spacing" in res.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    cases = {c["id"]: c for c in m["cases"]}
    assert m["schema"] == "flare-correct" and set(cases) == {"fl", "cpl", "pl"}
    assert cases["fl"]["kind"] == "FL" and cases["fl"]["from_teacher"] == []
    assert cases["cpl"]["kind"] == "CPL" and cases["cpl"]["annotated"] == [1, 14]
    assert 1 not in cases["cpl"]["from_teacher"] and cases["pl"]["kind"] == "PL"
    assert cases["pl"]["annotated"] == [] and cases["cpl"]["image"].endswith("cpl_0000.nii.gz")
    assert m["summary"] == {"FL": 1, "CPL": 1, "PL": 1, "partial": 0, "failed": ["bad"]}
    from flarecli.core.io.nifti import read_volume

    out, _ = read_volume(tmp_path / "out" / "cpl.nii.gz")
    assert np.array_equal(out, correct(pseudo, partial))
    # the manifest trains: kinds come through
    from flarecli.core.curation.subsets import read_source

    cases_, _, _, _ = read_source(tmp_path / "out" / "manifest.json")
    assert sorted(c.kind for c in cases_) == ["CPL", "FL", "PL"]
    res = run_cli("correct", tmp_path / "pseudo", tmp_path / "labels", tmp_path / "pseudo")
    assert res.code == 3


def test_a_bad_partial_label_is_named_once(tmp_path, run_cli):
    g = geom((4, 5, 6))
    write_volume(tmp_path / "img" / "c_0000.nii.gz", np.zeros(g.shape_zyx, np.int16), g)
    write_volume(tmp_path / "pseudo" / "c.nii.gz", np.ones(g.shape_zyx, np.uint8), g)
    write_volume(tmp_path / "labels" / "c.nii.gz", np.full(g.shape_zyx, 1.5, np.float32), g)
    res = run_cli("correct", tmp_path / "pseudo", tmp_path / "labels", tmp_path / "out",
                  "--images", tmp_path / "img")
    assert res.code == 4
    assert "c.nii.gz: partial label has non-integer values (e.g. 1.5)" in res.stderr
    assert "label label" not in res.stderr


def test_a_rerun_keeps_what_is_current_and_corrects_again_what_changed(tmp_path, run_cli):
    from flarecli.core.io.nifti import read_volume

    g = geom((6, 6, 6))
    pseudo = np.zeros(g.shape_zyx, np.uint8)
    pseudo[1:3], pseudo[3:5] = 1, 5  # liver and aorta from the teacher
    partial = np.zeros(g.shape_zyx, np.uint8)
    partial[0, 0, 0] = 14
    for case in ("same", "changed"):
        write_volume(tmp_path / "img" / f"{case}_0000.nii.gz", np.zeros(g.shape_zyx, np.int16), g)
        write_volume(tmp_path / "labels" / f"{case}.nii.gz", partial, g)
        write_volume(tmp_path / "pseudo" / f"{case}.nii.gz", pseudo, g)
    args = ("correct", tmp_path / "pseudo", tmp_path / "labels", tmp_path / "out", "--images",
            tmp_path / "img")
    assert run_cli(*args).code == 0
    kept = (tmp_path / "out" / "same.nii.gz").stat().st_mtime_ns
    write_volume(tmp_path / "pseudo" / "changed.nii.gz", np.where(pseudo == 5, 0, pseudo), g)
    res = run_cli(*args)
    assert res.code == 0 and "changed.nii.gz: its inputs changed" in res.stderr
    assert "same.nii.gz" not in res.stderr
    assert (tmp_path / "out" / "same.nii.gz").stat().st_mtime_ns == kept  # resumed, not redone
    out, _ = read_volume(tmp_path / "out" / "changed.nii.gz")
    assert sorted(np.unique(out)) == [0, 1, 14]  # the file is the new correction ...
    cases = {c["id"]: c for c in
             json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]}
    assert cases["changed"]["from_teacher"] == [1]  # ... and the manifest describes it
    assert cases["same"]["from_teacher"] == [1, 5]
