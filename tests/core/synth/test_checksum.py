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
        "7cc70b8b5943d64eb64126bfd2918ba6439ac03f4accf3dbe1517b543e2d4759",
    # 2 tumors, tumor labels only
    ("tr", 4, "tumor_only"):
        "87edcca094c9b8bb989090dd09e2fbc1dd407c80bebb084ede7bd7f346f7c737",
    # 3 tumors, liver, pancreas and tumor labelled
    ("tr", 5, "other"):
        "145024bfccbcd53617c9d46ebbaa440475d39efc2fddeceb250650b4e0ca8407",
    # test split, 3 tumors
    ("ts", 0, None):
        "cbdce743440aac6fb8ab2601d55bcfae1d16d1b4ab5ce05e8448050215fb930f",
    # test split, 2 tumors
    ("ts", 2, None):
        "890bd255e77f486774a4faf8ffd30764491540adb374ad3fff6670f697624341",
    # unlabelled, tumors drawn by the phantom
    ("un", 22, None):
        "b14ce05918c10b9f2b590f2fcbbfa8f05b74af3f0ada4cb51f3e5db7f0fc4297",
    # unlabelled, tumors drawn by the phantom
    ("un", 3, None):
        "79b27143d54e461fd3ba3aad771b8abf35f3c31819774175e5724b2092bdf5eb",
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
