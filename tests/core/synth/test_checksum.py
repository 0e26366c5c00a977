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
    # RAS, chest+pelvis, 3 tumors (liver x2, left kidney)
    ("tr", 2, "5_organs_tumor"):
        "4e155979d27df9149d2a9bc67ad75beddef2c0a32b401d78695cc2ee12fb7590",
    # RAS, pelvis, a para-aortic node and a stomach tumor
    ("tr", 4, "tumor_only"):
        "797814f70336ec76aefe729c4162d61db9c007a1c4fe6dd71e7a7b4cd2cc5433",
    # LPS, pelvis, liver tumor and a node
    ("tr", 5, "other"):
        "e1f3d44fd2227adf62097a00cbc86845d75ec0aedfd379eadb34d83ce28125e9",
    # LPS, abdomen, liver and left kidney tumors
    ("ts", 0, None):
        "7b91e5b33d62a7f078fabdc72999de9b36b28e2fdecdb0be3dc2f5d14540d780",
    # RPS, abdomen, a para-aortic node
    ("ts", 2, None):
        "e829cfaeee46e30fefcdc827cd9505ab2cc4ea1e6dc36c0b13ceac82cdf52685",
    # LPI, pelvis, two liver tumors
    ("un", 22, None):
        "d46a5c6e83789fff4a37582924cfe39f56e022e92168a0f579a45814ab7117cd",
    # RAS, chest, a liver tumor
    ("un", 3, None):
        "347ef5551dfc12bb81dd099d6ae7ac113a5d315f4e3020c20675edb44feb65ba",
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
