"""Scans and option values that must be refused with one line: non-finite voxels in every
command that reads scans, values printed in messages, --cache-dir on a file, --shard typos,
output names too long for the file system, output folders in use by another run."""

from __future__ import annotations

import gzip
import json
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


# ---- correct: every grid of a case must be its scan's -----------------------------------

def test_correct_refuses_labels_on_another_grid_than_the_scan(tmp_path, run_cli):
    shape = (6, 8, 8)
    rng = np.random.default_rng(0)
    pseudo = rng.integers(0, 14, shape).astype(np.uint8)
    partial = np.where(pseudo == 1, 1, 0).astype(np.uint8)
    on_grid, off = geom(shape), geom(shape, origin=(50.0, 0.0, 0.0))
    wide = geom(shape, spacing_xyz=(1.5, 1.5, 1.5))
    cases = {  # case: (pseudo-label grid, partial label grid or None)
        "good": (on_grid, on_grid), "pl_good": (on_grid, None),
        "pseudo_off": (off, on_grid), "pseudo_wide": (wide, None),
        "both_off": (off, off), "label_wide": (on_grid, wide)}
    for case, (pseudo_grid, label_grid) in cases.items():
        write_volume(tmp_path / "img" / f"{case}_0000.nii.gz", np.zeros(shape, np.int16),
                     on_grid)
        write_volume(tmp_path / "pseudo" / f"{case}.nii.gz", pseudo, pseudo_grid)
        if label_grid is not None:
            write_volume(tmp_path / "labels" / f"{case}.nii.gz", partial, label_grid)
    res = run_cli("correct", tmp_path / "pseudo", tmp_path / "labels", tmp_path / "out",
                  "--images", tmp_path / "img")
    assert res.code == 4, res.stderr
    for case, pattern in (("pseudo_off", r"pseudo-label vs image origin \(50, 0, 0\) vs "
                                         r"\(0, 0, 0\) mm"),
                          ("pseudo_wide", r"pseudo-label vs image spacing \(1.5, 1.5, 1.5\) "
                                          r"vs \(1, 1, 1\) mm"),
                          ("both_off", r"partial label vs image origin"),
                          ("label_wide", r"partial label vs image spacing")):
        one_error_line(res, f"{case}:", pattern)
        assert not (tmp_path / "out" / f"{case}.nii.gz").exists()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [
        "good.nii.gz", "pl_good.nii.gz"]


# ---- one run at a time into an output folder ----------------------------------------------

@pytest.fixture
def live_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_output_folder_in_use_is_refused_and_a_stale_lock_taken_over(
        model_dir, live_pid, tmp_path, run_cli):  # noqa: F811
    from flarecli.core.io.lock import _HOST

    (tmp_path / "in").mkdir()
    for case in ("a", "b"):
        write_volume(tmp_path / "in" / f"{case}_0000.nii.gz",
                     np.random.default_rng(1).integers(-500, 500, (8, 10, 12)).astype(
                         np.int16), geom((8, 10, 12)))
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".flare.lock"
    args = ("infer", tmp_path / "in", out, "--model", model_dir, "--device", "cpu")
    lock.write_text(f"{_HOST} {live_pid}\n")  # another run, alive
    res = run_cli(*args)
    assert res.code == 3, res.stderr
    assert res.stderr.splitlines()[0] == f"flare: error: {out}: folder in use by PID {live_pid}"
    assert not list(out.glob("*.nii.gz")) and lock.read_text() == f"{_HOST} {live_pid}\n"
    for share in ("--shard", "1/2"), ("--pseudo",):  # a shard too; (pseudolabel: same rule)
        if share == ("--pseudo",):
            res = run_cli("pseudolabel", *args[1:])
        else:
            res = run_cli(*args, *share)
        assert res.code == 3 and f"in use by PID {live_pid}" in res.stderr, res.stderr
    dead = dead_pid()
    lock.write_text(f"{_HOST} {dead}\n")  # a run that was killed
    res = run_cli(*args)
    assert res.code == 0, res.stderr
    assert f"took over the lock of PID {dead}" in res.stderr
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz"]
    assert not lock.exists()  # released at the end


def test_shares_of_one_job_write_one_folder_together(model_dir, live_pid, tmp_path,  # noqa
                                                     run_cli):
    from flarecli.core.io.lock import _HOST

    (tmp_path / "in").mkdir()
    for case in ("a", "b", "c", "d"):
        write_volume(tmp_path / "in" / f"{case}_0000.nii.gz", np.zeros((8, 10, 12), np.int16),
                     geom((8, 10, 12)))
    out = tmp_path / "out"
    out.mkdir()
    other = out / ".flare.shard-1-of-2.lock"
    other.write_text(f"{_HOST} {live_pid}\n")  # shard 1 is running
    args = ("infer", tmp_path / "in", out, "--model", model_dir, "--device", "cpu")
    res = run_cli(*args, "--shard", "2/2")
    assert res.code == 0, res.stderr
    assert not (out / ".flare.shard-2-of-2.lock").exists()
    res = run_cli(*args, "--shard", "1/2")  # the same share twice
    assert res.code == 3 and f"in use by PID {live_pid}" in res.stderr
    res = run_cli(*args)  # the whole folder while a share runs
    assert res.code == 3 and f"in use by PID {live_pid}" in res.stderr


# ---- names the file system cannot hold ----------------------------------------------------

def test_an_output_name_over_255_bytes_is_one_line_exit_3(model_dir, tmp_path,  # noqa: F811
                                                          run_cli):
    data = tmp_path / "data"
    blob_case(data, "a", 0)
    long = "x" * 300
    for args in (("infer", data / "imagesTr", tmp_path / long / "out", "--model", model_dir,
                  "--device", "cpu"),
                 ("infer", data / "imagesTr", tmp_path / "out" / long, "--model", model_dir,
                  "--device", "cpu"),
                 ("stats", data / "labelsTr", "--json", tmp_path / f"{long}.json"),
                 ("stats", data / "labelsTr", "--json", tmp_path / long / "s.json")):
        res = run_cli(*args)
        assert res.code == 3, (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert res.stderr.startswith("flare: error: ") and len(res.stderr.splitlines()) == 1
        assert re.search(r"'x{24}\.\.\.' is 30[05] bytes long", res.stderr), res.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))


# ---- how a header places its grid --------------------------------------------------------

def set_transform(path: Path, codes=None, srow_shift_mm: float = 0.0, pixdim=None) -> None:
    """Rewrite a NIfTI-1 file's qform/sform codes, move its sform's x offset, or set pixdim."""
    from flarecli.core.io.nifti_header import _LAYOUT

    raw = bytearray(gzip.decompress(path.read_bytes()))
    if codes is not None:
        struct.pack_into("<2h", raw, _LAYOUT[1]["codes"][1], *codes)
    if srow_shift_mm:
        offset = _LAYOUT[1]["srow"][1]
        srow = list(struct.unpack_from("<12f", raw, offset))
        srow[3] += srow_shift_mm
        struct.pack_into("<12f", raw, offset, *srow)
    if pixdim is not None:
        struct.pack_into("<8f", raw, _LAYOUT[1]["pixdim"][1], *pixdim)
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("codes, used", [((1, 1), "sform"), ((1, 2), "qform")])
def test_disagreeing_qform_and_sform_are_read_with_a_note_naming_the_one_used(codes, used,
                                                                              tmp_path):
    from flarecli.core.io.nifti import read_header, read_volume

    path = tmp_path / "x.nii.gz"
    write_volume(path, np.ones((4, 5, 6), np.int16), geom((4, 5, 6), origin=(10, 20, 30)))
    assert read_header(path).note is None  # ITK writes both, agreeing
    set_transform(path, codes=codes, srow_shift_mm=50.0)
    g = read_header(path)
    assert g == read_volume(path)[1]
    assert f"disagree by up to 50.0 mm; the {used} is used" in g.note
    # the note names the transform the grid really follows: the sform moved x by 50 mm
    # (RAS), which is -50 mm in flare's LPS frame
    assert g.origin_xyz[0] == pytest.approx(-40.0 if used == "sform" else 10.0)


def test_no_transform_and_a_negative_pixdim_read_like_a_full_read_with_a_note(tmp_path):
    from flarecli.core.io.nifti import read_header, read_volume

    path = tmp_path / "x.nii.gz"
    write_volume(path, np.ones((4, 5, 6), np.int16), geom((4, 5, 6), spacing_xyz=(1, 1, 2)))
    set_transform(path, codes=(0, 0), pixdim=(1.0, -1.0, 1.0, 2.0, 0, 0, 0, 0))
    g = read_header(path)
    # ITK hands a header read a negative spacing and a full read a flipped axis: one grid
    assert g == read_volume(path)[1]
    assert g.spacing_xyz == (1.0, 1.0, 2.0) and g.direction_matrix[0, 0] == -1.0
    assert "both codes 0" in g.note and "read as RPS" in g.note and "negative" in g.note


def test_the_transform_note_reaches_the_user_per_case(model_dir, tmp_path,  # noqa: F811
                                                      run_cli):
    data = tmp_path / "data"
    for case in ("plain", "odd"):
        blob_case(data, case, 1)
    set_transform(data / "imagesTr" / "odd_0000.nii.gz", codes=(1, 1), srow_shift_mm=5.0)
    set_transform(data / "labelsTr" / "odd.nii.gz", codes=(1, 1), srow_shift_mm=5.0)
    images = data / "imagesTr"
    for command, args in (
            ("infer", [images, tmp_path / "inf", "--model", model_dir, "--device", "cpu"]),
            ("audit", [data, "--json", tmp_path / "a.json"]),
            ("evaluate", [data / "labelsTr", data / "labelsTr", "--csv", tmp_path / "e.csv"])):
        res = run_cli(command, *args)
        assert res.code == 0, (command, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("note:")
                 and "qform" in ln]
        assert lines and all(ln.startswith("note: odd:") for ln in lines), (command,
                                                                            res.stderr)
        assert "the sform is used" in lines[0]
    record = json.loads((tmp_path / "inf" / "infer.json").read_text())
    notes = {s["case"]: s["geometry_note"] for s in record["scans"]}
    assert notes["plain"] is None and "disagree by up to 5.0 mm" in notes["odd"]
    audit = json.loads((tmp_path / "a.json").read_text())
    assert [c["notes"] for c in audit["cases"] if c["id"] == "plain"] == [[]]
