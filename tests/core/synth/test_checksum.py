"""The synthetic data, pinned: fixed-seed cases of ``make_case`` hash to the same bytes.

Every refactor of the anatomy samplers and the renderer must keep these: the random draws
happen in a fixed order (changing it changes every case), and the demo's numbers, the tests'
known answers and users' regenerated datasets all rest on them. The cases cover the four
directions, the four z extents, organ tumors, para-aortic nodes and each label pattern's
partial label; sha256 over the arrays read back (dtype, shape, bytes) and the truth record.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from flarecli.core.io.nifti import read_volume
from flarecli.core.synth.dataset import CaseJob, case_seed, make_case

#: (split, index, pattern) of seed 7 at 48 x 48 in-plane -> sha256 (see the module docstring)
CASES = {
    # 4 tumors, labels of five organs and tumor
    ("tr", 2, "5_organs_tumor"):
        "924b7d52af51d8faa06c73e7c59581a9e13251f7905f59077edf1de982d4b998",
    # 2 tumors, tumor labels only
    ("tr", 4, "tumor_only"):
        "cf71549a21820afca31880777bd4ebb336260abd0bfdb0f75eaaf91ef1d53d30",
    # 3 tumors, liver, pancreas and tumor labelled
    ("tr", 5, "other"):
        "29696ff62e1ff38e534ec624ae0c1fcc04072b24277d56bf11a06079d9fcf86b",
    # test split, 3 tumors
    ("ts", 0, None):
        "71433d59139d8a8c5f23f81baad73e771c069cb9ed28e70471d2851814a0c6b6",
    # test split, 2 tumors
    ("ts", 2, None):
        "f0e7680201f61724192da64c3423751013650955d148e020e4d52bc1308e01fe",
    # unlabelled, tumors drawn by the phantom
    ("un", 22, None):
        "22bd81260bbbe8d51dd503d1cdad6ea4db86b677fb9143b24477402384c77677",
    # unlabelled, tumors drawn by the phantom
    ("un", 3, None):
        "82d46d6ec24d8f3122a917bafbfb0eb18cff6857c42c525360ae9da734b40a34",
}


def case_digest(tmp_path, split: str, index: int, pattern: str | None) -> str:
    job = CaseJob(str(tmp_path), split, index, f"syn_{split}_{index + 1:04d}",
                  case_seed(7, split, index), 48, pattern, overwrite=False)
    record = make_case(job)
    h = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for path in sorted(tmp_path.rglob("*.nii.gz")):
        array, geometry = read_volume(path)
        h.update(f"{path.parent.name}/{path.name} {array.dtype} {array.shape}".encode())
        h.update(array.tobytes())
        h.update(json.dumps(geometry.to_json(), sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("key", list(CASES), ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}")
def test_synthetic_cases_are_pinned(tmp_path, key):
    assert case_digest(tmp_path, *key) == CASES[key]
