"""flare synth: determinism, splits, FLARE23 label patterns, variety, and agreement with audit."""

import json
from collections import Counter

import numpy as np
import pytest

from flarecli.core.curation.audit import audit_case, dataset_cases, summarize
from flarecli.core.io.nifti import read_volume
from flarecli.core.recipes.spec import SynthConfig
from flarecli.core.synth.dataset import PATTERNS, partial_label, plan, split_counts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from flarecli.cli import main

    out = tmp_path_factory.mktemp("synth") / "ds"
    with pytest.raises(SystemExit) as e:
        main(["synth", str(out), "--train", "12", "--unlabeled", "3", "--test", "2", "--size",
              "64", "--seed", "7"])
    assert e.value.code == 0
    return out


def test_layout_and_split_sizes(dataset):
    count = lambda d: len(list((dataset / d).glob("*.nii.gz")))  # noqa: E731
    assert (count("imagesTr"), count("labelsTr"), count("imagesUn")) == (12, 12, 3)
    assert (count("imagesTs"), count("labelsTs"), count("labelsFull")) == (2, 2, 15)
    ds = json.loads((dataset / "dataset.json").read_text())
    assert ds["numTraining"] == 12 and ds["labels"]["tumor"] == 14
    assert ds["channel_names"] == {"0": "CT"}


def test_audit_agrees_with_what_the_generator_wrote(dataset):
    record = {c["id"]: c for c in json.loads((dataset / "synth.json").read_text())["cases"]}
    found = dataset_cases(dataset)
    results = [audit_case(c) for c in found.cases]
    assert len(results) == 15
    for r in results:
        assert r.problems == [], (r.id, r.problems)
        truth = record[r.id]
        assert r.labeled == (truth["split"] == "tr")
        assert r.organs + ([14] if r.tumor else []) == truth["classes"]
    s = summarize(results)
    assert s["labeled"] == 12 and s["unlabeled"] == 3
    full = [c for c in record.values() if c["pattern"] == "13_organs"]
    assert s["organ_full"] == len(full) and s["groups"]["unlabeled"] == 3


def test_pattern_shares_are_exact_and_match_flare23():
    counts = split_counts(100, PATTERNS)
    assert counts == {"13_organs": 10, "5_organs": 20, "5_organs_tumor": 27, "tumor_only": 40,
                      "other": 3}
    assert sum(split_counts(37, PATTERNS).values()) == 37
    jobs = plan(SynthConfig(train=50, unlabeled=0, test=0), 0,
                tmp := __import__("pathlib").Path("/nonexistent"))
    assert Counter(j.pattern for j in jobs) == Counter(split_counts(50, PATTERNS))
    assert tmp  # plan() only plans; nothing is written


def test_partial_label_rules():
    full = np.arange(15, dtype=np.uint8).reshape(15, 1, 1).repeat(2, axis=1)
    rng = np.random.default_rng(0)
    assert set(np.unique(partial_label(full, "tumor_only", 1, rng))) == {0, 14}
    assert set(np.unique(partial_label(full, "13_organs", 0, rng))) == set(range(15))
    five = [set(np.unique(partial_label(full, "5_organs", 0, np.random.default_rng(s))))
            for s in range(60)]
    assert all(f <= {0, 1, 2, 3, 4, 13} for f in five)
    assert any(f == {0, 1, 2, 3, 4, 13} for f in five) and any(len(f) == 5 for f in five)


def test_cases_are_deterministic(dataset, tmp_path, run_cli):
    # the same command gives the same data
    res = run_cli("synth", tmp_path / "a", "--train", "12", "--unlabeled", "3", "--test", "2",
                  "--size", "64", "--seed", "7")
    assert res.code == 0
    for name in ("imagesTr/syn_tr_0005_0000", "labelsTr/syn_tr_0005", "labelsFull/syn_un_0002"):
        x, gx = read_volume(dataset / f"{name}.nii.gz")
        y, gy = read_volume(tmp_path / "a" / f"{name}.nii.gz")
        assert np.array_equal(x, y) and gx == gy
    # unlabeled and test cases do not depend on the other split sizes
    res = run_cli("synth", tmp_path / "b", "--train", "0", "--unlabeled", "1", "--test", "1",
                  "--size", "64", "--seed", "7")
    for name in ("imagesTs/syn_ts_0001_0000", "imagesUn/syn_un_0001_0000"):
        x, _ = read_volume(dataset / f"{name}.nii.gz")
        y, _ = read_volume(tmp_path / "b" / f"{name}.nii.gz")
        assert np.array_equal(x, y)
    # another seed, other data
    res = run_cli("synth", tmp_path / "c", "--train", "0", "--unlabeled", "0", "--test", "1",
                  "--size", "64", "--seed", "8")
    other, _ = read_volume(tmp_path / "c" / "imagesTs" / "syn_ts_0001_0000.nii.gz")
    same, _ = read_volume(dataset / "imagesTs" / "syn_ts_0001_0000.nii.gz")
    assert other.shape != same.shape or not np.array_equal(other, same)


def test_variety_and_anatomy(dataset):
    record = json.loads((dataset / "synth.json").read_text())["cases"]
    orientations = {c["geometry"]["orientation"] for c in record}
    thickness = [c["geometry"]["spacing_xyz"][2] for c in record]
    slices = {c["geometry"]["shape_xyz"][2] for c in record}
    assert len(orientations) >= 2 and len(slices) >= 5 and max(thickness) > 1.5 * min(thickness)
    for c in record[:6]:
        folder = "labelsTs" if c["split"] == "ts" else "labelsFull"
        lab, g = read_volume(dataset / folder / f"{c['id']}.nii.gz")
        x = {k: g.index_to_physical(np.argwhere(lab == k)).mean(0)[0] for k in (1, 2, 3, 13)}
        # LPS: +x is the patient's left
        assert x[1] < 0 < x[3]  # liver right, spleen left
        assert x[2] < x[13]
        assert set(range(1, 14)) <= set(np.unique(lab).tolist())


def test_resume_and_bad_options(dataset, tmp_path, run_cli):
    args = ["--train", "1", "--unlabeled", "0", "--test", "0", "--size", "64"]
    assert run_cli("synth", tmp_path / "d", *args).code == 0
    image = tmp_path / "d" / "imagesTr" / "syn_tr_0001_0000.nii.gz"
    mtime = image.stat().st_mtime_ns
    assert run_cli("synth", tmp_path / "d", *args).code == 0  # resume: nothing redone
    assert image.stat().st_mtime_ns == mtime
    res = run_cli("synth", tmp_path / "d", *args, "--seed", "3")
    assert res.code == 3 and "holds another dataset" in res.stderr
    assert run_cli("synth", tmp_path / "d", *args, "--seed", "3", "--overwrite").code == 0
    res = run_cli("synth", tmp_path / "e", "--size", "8")
    assert res.code == 3 and "--size 8" in res.stderr
    res = run_cli("synth", tmp_path / "e", "--train", "-1")
    assert res.code == 2
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x.txt").write_text("mine")
    res = run_cli("synth", tmp_path / "f", *args)
    assert res.code == 3 and "not empty" in res.stderr
    # a real dataset (its dataset.json no synth's) is never regenerated, --overwrite or not
    real = tmp_path / "real"
    (real / "imagesTr").mkdir(parents=True)
    (real / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1}}')
    (real / "imagesTr" / "syn_tr_0001_0000.nii.gz").write_bytes(image.read_bytes())
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    res = run_cli("synth", real, *args, "--overwrite")
    assert res.code == 3 and "not a dataset flare synth made" in " ".join(res.stderr.split())
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before
