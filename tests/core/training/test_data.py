import json
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


def test_target_luts():
    ids = np.arange(15, dtype=np.uint8)
    assert D.target_lut("abdomen")[ids].tolist() == [0] + [1] * 14
    assert D.target_lut("organs")[ids].tolist() == list(range(14)) + [0]
    assert D.target_lut("tumor")[ids].tolist() == [0] * 14 + [1]


def test_cases_from_an_audit_manifest(tmp_path):
    def entry(i, category, tumor, organs):
        return {"id": f"c{i}", "image": f"/i/{i}", "label": f"/l/{i}", "organs": organs,
                "tumor": tumor, "organ_category": category, "problems": []}

    m = {"schema_version": 1, "cases": [
        entry(0, "full", False, list(range(1, 14))), entry(1, "partial", True, [1, 2]),
        entry(2, "none", True, []), entry(3, "full", True, list(range(1, 14))),
        {**entry(4, "full", False, list(range(1, 14))), "problems": ["bad"]},
        {"id": "u", "image": "/i/u", "label": None, "organs": [], "tumor": False,
         "organ_category": "none", "problems": []}]}
    (tmp_path / "m.json").write_text(json.dumps(m))
    organs, notes = D.training_cases(tmp_path / "m.json", "organs")
    assert [(c.id, c.kind) for c in organs] == [("c0", "FL"), ("c3", "FL")]
    assert "4 manifest cases" in notes[0]
    tumor, _ = D.training_cases(tmp_path / "m.json", "tumor")
    assert [c.id for c in tumor] == ["c1", "c2", "c3"]


def test_cases_from_a_correct_manifest(tmp_path):
    m = {"cases": [
        {"id": "a", "image": "/i/a", "label": "/l/a", "kind": "FL", "annotated": [1, 14]},
        {"id": "b", "image": "/i/b", "label": "/l/b", "kind": "CPL", "annotated": [2]},
        {"id": "c", "image": "/i/c", "label": "/l/c", "kind": "PL", "annotated": []}]}
    (tmp_path / "m.json").write_text(json.dumps(m))
    organs, _ = D.training_cases(tmp_path / "m.json", "organs")
    assert [c.kind for c in organs] == ["FL", "CPL", "PL"]
    assert [c.id for c in D.training_cases(tmp_path / "m.json", "tumor")[0]] == ["a"]
    with pytest.raises(InputError, match="no such dataset folder or manifest"):
        D.training_cases(tmp_path / "nope.json", "organs")


def test_validation_split():
    cases = [D.TrainCase(f"c{i}", "", "", "FL" if i < 10 else "PL") for i in range(20)]
    tr, va = D.split_validation(cases, 0.2, 0)
    assert len(va) == 2 and all(c.kind == "FL" for c in va) and len(tr) == 18
    assert D.split_validation(cases, 0.2, 0) == (tr, va)
    assert len(D.split_validation(cases[:3], 0.1, 0)[1]) == 1
    assert D.split_validation(cases, 0.0, 0)[1] == []


def test_box_grid_maps_the_box_onto_the_output():
    import torch
    import torch.nn.functional as F

    src = torch.arange(8.0).reshape(1, 1, 8, 1, 1).expand(1, 1, 8, 4, 4).contiguous()
    grid = D.box_grid(np.array([[2.0, 6.0], [0, 4], [0, 4]]), (8, 4, 4), (4, 4, 4), "cpu")
    out = F.grid_sample(src, grid, mode="nearest", align_corners=False)
    assert out[0, 0, :, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
