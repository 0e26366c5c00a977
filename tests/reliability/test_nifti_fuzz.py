"""A seeded NIfTI header fuzzer: a few hundred mutants of a small scan (dims, datatype,
bitpix, vox_offset, pixdim, qform/sform codes and matrices, scaling, the magic string,
truncation), each read by flare in a child process with a memory cap. Every mutant must give
a correct read or one line of error with a documented exit code: no traceback, no hang, no
allocation far beyond what the file can hold."""

import gzip
import json
import random
import struct
import subprocess
import sys

import numpy as np

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume

#: (byte offset, struct format) of the NIfTI-1 fields the fuzzer mutates.
FIELDS = {
    "dim0": (40, "h"), "dim1": (42, "h"), "dim2": (44, "h"), "dim3": (46, "h"),
    "dim4": (48, "h"), "dim5": (50, "h"), "datatype": (70, "h"), "bitpix": (72, "h"),
    "pixdim0": (76, "f"), "pixdim1": (80, "f"), "pixdim2": (84, "f"), "pixdim3": (88, "f"),
    "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
    "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern_b": (256, "f"),
    "quatern_c": (260, "f"), "qoffset_x": (268, "f"), "srow_x0": (280, "f"),
    "srow_y1": (300, "f"), "srow_z2": (320, "f"), "srow_x3": (292, "f"), "sizeof_hdr": (0, "i"),
}
VALUES = {"h": [0, -1, 1, 2, 3, 4, 7, 8, 16, 64, 128, 255, 512, 1000, 1536, 2304, 32767,
                -32768],
          "f": [0.0, -0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), 2.5, 352.0, 1e9],
          "i": [0, 348, 540, -348, 1 << 30]}
#: Fields whose change legitimately changes what is read (values are then not compared).
LAYOUT = {"dim0", "dim1", "dim2", "dim3", "datatype", "bitpix", "vox_offset", "scl_slope",
          "scl_inter", "sizeof_hdr"}

CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import numpy as np
from flarecli.core.errors import FlareError
from flarecli.core.io.nifti import read_volume
expected = np.load(sys.argv[1])
for line in sys.stdin:
    case = json.loads(line)
    try:
        array, geometry = read_volume(case["path"])
        same = bool(array.shape == expected.shape and np.array_equal(array, expected))
        out = {"ok": True, "same": same}
    except FlareError as e:
        out = {"ok": False, "code": e.exit_code, "message": e.message}
    except BaseException as e:  # what the test must never see
        out = {"ok": False, "crash": f"{type(e).__name__}: {e}"}
    print(json.dumps({**case, **out}), flush=True)
"""


def mutants(tmp_path, n=300, seed=0):
    g = Geometry((8, 9, 10), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    original = (np.arange(720).reshape(8, 9, 10) % 300).astype(np.int16)
    write_volume(tmp_path / "base.nii", original, g, compress=False)
    base = (tmp_path / "base.nii").read_bytes()
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        data = bytearray(base)
        changed = []
        roll = rng.random()
        if roll < 0.75:
            for _ in range(rng.randint(1, 3)):
                name = rng.choice(list(FIELDS))
                offset, fmt = FIELDS[name]
                struct.pack_into("<" + fmt, data, offset, rng.choice(VALUES[fmt]))
                changed.append(name)
        elif roll < 0.85:
            data[344:348] = rng.choice([b"n+2\0", b"ni1\0", b"xxxx", b"\0\0\0\0"])
            changed.append("sizeof_hdr")  # the magic: whether it reads is the question
        else:
            data = data[:rng.randint(0, len(data) - 1)]
            changed.append("sizeof_hdr")
        suffix = ".nii.gz" if rng.random() < 0.5 else ".nii"
        path = tmp_path / f"m{i:03d}{suffix}"
        path.write_bytes(gzip.compress(bytes(data)) if suffix == ".nii.gz" else bytes(data))
        cases.append({"path": str(path), "changed": changed})
    np.save(tmp_path / "expected.npy", original)
    return cases


def test_every_mutant_reads_correctly_or_gives_one_line(tmp_path):
    cases = mutants(tmp_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "expected.npy")],
                          input="".join(json.dumps(c) + "\n" for c in cases),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cases)  # no mutant killed the reader
    assert proc.stderr == ""  # no library wrote anything of its own
    outcomes = {"read": 0, "error": 0}
    for r in results:
        assert "crash" not in r, r
        if r["ok"]:
            outcomes["read"] += 1
            if not set(r["changed"]) & LAYOUT:  # geometry-only changes keep the voxels
                assert r["same"], r
        else:
            outcomes["error"] += 1
            assert r["code"] in (3, 4), r
            assert "\n" not in r["message"] and r["message"].startswith(r["path"]), r
    assert outcomes["read"] > 20 and outcomes["error"] > 100, outcomes
