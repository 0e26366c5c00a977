"""--shard I/N and torchrun ranks: disjoint shares that together give exactly one run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.inference.shards import in_shard, parse_shard
from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.io.outputs import written_here
from tests.conftest import geom


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("shards")
    (root / "model").symlink_to(tiny_model / "model")
    rng = np.random.default_rng(0)
    for i in range(7):
        write_volume(root / "scans" / f"s{i:02d}_0000.nii.gz",
                     rng.normal(0, 200, (12, 20, 22)).astype(np.int16),
                     geom((12, 20, 22), spacing_xyz=(1.5, 1.5, 2.0)))
    return root


def outputs(folder):
    return {p.name: read_volume(p)[0] for p in sorted(folder.glob("*.nii.gz"))}


def test_shards_are_disjoint_cover_everything_and_are_stable():
    ids = [f"case_{i:04d}" for i in range(200)]
    shares = [[c for c in ids if in_shard(c, (i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(shares, [])) == ids and all(len(s) > 40 for s in shares)
    more = ids + [f"new_{i}" for i in range(50)]  # adding cases moves none of the old ones
    assert [[c for c in more if in_shard(c, (i, 3)) and c in ids] for i in (1, 2, 3)] == shares
    assert parse_shard("2/8") == (2, 8) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_three_shards_give_one_run(setup, tmp_path, run_cli):
    model, scans = setup / "model", setup / "scans"
    common = ("--model", model, "--device", "cpu", "--backend", "torch")
    assert run_cli("infer", scans, tmp_path / "one", *common).code == 0
    for i in (1, 2, 3):
        res = run_cli("infer", scans, tmp_path / "sharded", *common, "--shard", f"{i}/3")
        assert res.code == 0, res.stderr
    one, sharded = outputs(tmp_path / "one"), outputs(tmp_path / "sharded")
    assert list(one) == list(sharded)
    assert all(np.array_equal(one[k], sharded[k]) for k in one)
    records = sorted(p.name for p in (tmp_path / "sharded").glob("infer*.json"))
    assert records == [f"infer.shard-{i}-of-3.json" for i in (1, 2, 3)]
    cases = [s["case"] for i in (1, 2, 3) for s in json.loads(
        (tmp_path / "sharded" / f"infer.shard-{i}-of-3.json").read_text())["scans"]]
    assert sorted(cases) == sorted(k.removesuffix(".nii.gz") for k in one)
    # shards at once never write one file: each keeps its own ledger of the outputs it wrote
    ledgers = sorted(p.name for p in (tmp_path / "sharded").glob(".flare-written*"))
    assert ledgers == [f".flare-written.shard-{i}-of-3" for i in (1, 2, 3)]
    assert written_here(tmp_path / "sharded", "infer") == set(one)
    # a shard resumes on its own
    res = run_cli("infer", scans, tmp_path / "sharded", *common, "--shard", "2/3")
    assert "skipped" in res.stdout and res.code == 0
    res = run_cli("pseudolabel", scans, tmp_path / "pl", *common, "--shard", "1/3")
    assert res.code == 0 and (tmp_path / "pl" / "scores.shard-1-of-3.csv").is_file()
    for i in (2, 3):
        assert run_cli("pseudolabel", scans, tmp_path / "pl", *common, "--shard",
                       f"{i}/3").code == 0
    # correct finds the scans in the shards' records: a job array writes no pseudolabel.json
    assert not (tmp_path / "pl" / "pseudolabel.json").exists()
    (tmp_path / "labels").mkdir()
    res = run_cli("correct", tmp_path / "pl", tmp_path / "labels", tmp_path / "corrected")
    assert res.code == 0, res.stderr
    manifest = json.loads((tmp_path / "corrected" / "manifest.json").read_text())
    assert sorted(Path(c["image"]).name for c in manifest["cases"]) == \
        sorted(p.name for p in scans.glob("*.nii.gz"))
    # one run over the whole folder afterwards finds every score in the shards' records
    res = run_cli("pseudolabel", scans, tmp_path / "pl", *common)
    assert res.code == 0 and "quality score is not in" not in res.stderr, res.stderr
    assert "pseudo-labelled 0 scans" in res.stdout, res.stdout


def test_two_torchrun_ranks_give_one_run(setup, tmp_path, run_cli):
    model, scans = setup / "model", setup / "scans"
    common = ["--model", str(model), "--device", "cpu", "--backend", "torch"]
    assert run_cli("infer", scans, tmp_path / "one", *common).code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "2", "--master_port", "29517", "-m", "flarecli", "infer",
                           str(scans), str(tmp_path / "ranks"), *common],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, ranks = outputs(tmp_path / "one"), outputs(tmp_path / "ranks")
    assert list(one) == list(ranks) and all(np.array_equal(one[k], ranks[k]) for k in one)
    record = json.loads((tmp_path / "ranks" / "infer.json").read_text())
    assert record["world_size"] == 2 and len(record["scans"]) == 7
    assert sorted(p.name for p in (tmp_path / "ranks").glob("*.json")) == ["infer.json"]
