"""Scans and option values that must be refused with one line: non-finite voxels in every
command that reads scans, values printed in messages, --cache-dir on a file, --shard typos,
output names too long for the file system, output folders in use by another run."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.io.nifti import write_volume
from tests.conftest import blob_case, geom
from tests.core.inference.test_engine import model_dir  # noqa: F401 (a fixture)

SHAPE = (24, 32, 32)


def patch_block(path: Path, value: float, corner=(2, 2, 2), size: int = 10) -> int:
    """A float32 copy of the scan at ``path`` with a size^3 block of ``value`` (NaN, inf)
    written into the raw data block (ITK reads such voxels as numbers, so the file is patched
    byte by byte); returns the number of voxels set."""
    from flarecli.core.io.nifti import read_volume

    image, g = read_volume(path)
    plain = path.parent / (path.name.removesuffix(".gz") + ".tmp.nii")
    write_volume(plain, image.astype(np.float32), g, compress=False)
    raw = bytearray(plain.read_bytes())
    plain.unlink()
    offset = int(struct.unpack("<f", raw[108:112])[0])
    data = np.frombuffer(raw, "<f4", count=image.size, offset=offset).reshape(image.shape).copy()
    z, y, x = corner
    data[z:z + size, y:y + size, x:x + size] = value
    raw[offset:offset + data.nbytes] = data.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    return size ** 3


def one_error_line(res, case: str, pattern: str, code: int = 4) -> str:
    assert res.code == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") and case in ln]
    assert len(lines) == 1 and re.search(pattern, lines[0]), res.stderr
    return lines[0]


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["NaN", "inf"])
def test_non_finite_voxels_refuse_the_case_in_every_command(value, model_dir,  # noqa: F811
                                                            tmp_path, run_cli):
    data = tmp_path / "data"
    for i in range(3):
        blob_case(data, f"good{i}", i)
    blob_case(data, "bad", 7)
    scan = data / "imagesTr" / "bad_0000.nii.gz"
    assert patch_block(scan, value) == 1000
    images, labels = data / "imagesTr", data / "labelsTr"
    message = r"bad_0000\.nii\.gz: 1000 NaN/inf voxels"
    for command, args, written in (
            ("infer", [images, tmp_path / "inf", "--model", model_dir, "--device", "cpu"],
             tmp_path / "inf" / "good0.nii.gz"),
            ("pseudolabel", [images, tmp_path / "pl", "--model", model_dir, "--device",
                             "cpu"], tmp_path / "pl" / "good0.nii.gz"),
            ("stats", [labels, "--images", images, "--json", tmp_path / "s.json"],
             tmp_path / "s.json"),
            ("preview", [labels, images, tmp_path / "png"], tmp_path / "png" / "good0.png"),
            ("audit", [data, "--json", tmp_path / "a.json"], tmp_path / "a.json")):
        res = run_cli(command, *args)
        one_error_line(res, "bad", message)
        assert written.is_file(), command  # the other cases were processed
    res = run_cli("train", data, "--out", tmp_path / "m", "--stage", "organs", "--preset",
                  "smoke", "--device", "cpu", "--iterations", "1")
    one_error_line(res, "bad", message)
    assert (tmp_path / "m" / "organs" / "model.json").is_file()


# ---- small ones --------------------------------------------------------------------------

def test_header_messages_print_the_values(tmp_path, run_cli):
    """Rich markup ate '[nan, 1.0, 1.0]' from these lines: the values must reach the user."""
    from flarecli.core.io.nifti_header import _LAYOUT

    (tmp_path / "in").mkdir()
    for case, field, value in (("spacing", "pixdim", (1.0, float("nan"), 1.0, 1.0)),
                               ("scaling", "scl", (float("inf"), 0.0))):
        path = tmp_path / "in" / f"{case}.nii"
        write_volume(path, np.ones((4, 5, 6), np.int16), geom((4, 5, 6)), compress=False)
        raw = bytearray(path.read_bytes())
        fmt, offset = _LAYOUT[1][field]
        assert fmt[-1] == "f"
        struct.pack_into("<" + "f" * len(value), raw, offset, *value)
        path.write_bytes(bytes(raw))
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    line = one_error_line(res, "spacing", "voxel size")
    assert "voxel size [nan, 1.0, 1.0] must be finite" in line
    line = one_error_line(res, "scaling", "scl_slope")
    assert "scl_slope / scl_inter [inf, 0.0] are not finite" in line


def test_cache_dir_on_a_file_is_one_line_exit_3(model_dir, tmp_path, run_cli):  # noqa: F811
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", np.zeros((8, 10, 12), np.int16),
                 geom((8, 10, 12)))
    (tmp_path / "afile").write_text("x")
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir, "--device",
                  "cpu", "--cache-dir", tmp_path / "afile")
    assert res.code == 3, res.stderr
    assert res.stderr.startswith("flare: error: ") and "--cache-dir" in res.stderr
    assert "Usage" not in res.stderr and "╭" not in res.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.nii.gz"))


@pytest.mark.parametrize("shard", [" 1/2", "1/ 2", "+1/2", "1_0/20", "１/2", "1/2/3"])
def test_shard_typos_are_refused_like_other_shard_errors(shard, model_dir, tmp_path,  # noqa
                                                        run_cli):
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", np.zeros((8, 10, 12), np.int16),
                 geom((8, 10, 12)))
    good = run_cli("infer", tmp_path / "in", tmp_path / "o", "--model", model_dir, "--device",
                   "cpu", "--shard", "3/2")
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu", "--shard", shard)
    assert res.code == good.code == 3, res.stderr
    assert "--shard" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.nii.gz"))
