"""Bad and awkward inputs x every command: one line per problem with a documented exit code,
the good cases still processed, inputs never written, no traceback.

Exit codes: 0 success (notes allowed), 3 input error, 4 some cases had problems, 5 model or
configuration error (docs/cli.md, 'Exit codes').
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.io.outputs import WRITTEN
from tests.conftest import blob_case, geom, save_model_json
from tests.core.curation.test_audit import write_nan_image
from tests.core.inference.test_engine import model_dir  # noqa: F401 (a fixture)

SHAPE = (8, 10, 12)


def label(values=(1, 2)):
    lab = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        lab[2 + 2 * i: 4 + 2 * i, 2:8, 2:10] = v
    return lab


def image():
    return np.random.default_rng(0).integers(-500, 500, SHAPE).astype(np.int16)


# ---- the bad files: name -> writer(folder, case id, kind) where kind is 'image' or 'label' --

def _truncated(path: Path, kind):
    write_volume(path, image() if kind == "image" else label(), geom(SHAPE))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path, kind):
    path.write_bytes(b"")


def _not_nifti(path: Path, kind):
    path.write_text("this is not an image\n")


def _two_d(path: Path, kind):
    sitk.WriteImage(sitk.Image(12, 10, sitk.sitkUInt8 if kind == "label" else sitk.sitkInt16),
                    str(path))


def _four_d(path: Path, kind):
    sitk.WriteImage(sitk.Image([12, 10, 8, 3], sitk.sitkInt16), str(path))


def _vector(path: Path, kind):
    sitk.WriteImage(sitk.Image([12, 10, 8], sitk.sitkVectorInt16, 3), str(path))


def _nan(path: Path, kind):
    write_nan_image(path, SHAPE)


def _out_of_range(path: Path, kind):
    write_volume(path, label((1, 255)).astype(np.int16) if kind == "label" else image(),
                 geom(SHAPE))


def _float_label(path: Path, kind):
    write_volume(path, label().astype(np.float32) * 0.75 if kind == "label" else image(),
                 geom(SHAPE))


def _negative_label(path: Path, kind):
    write_volume(path, (label().astype(np.int16) - 3) if kind == "label" else image(),
                 geom(SHAPE))


def _sheared(path: Path, kind):
    """A sform with shear and no qform: ITK refuses it as 'not orthonormal'."""
    import gzip
    import struct

    write_volume(path, image() if kind == "image" else label(), geom(SHAPE))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:256] = struct.pack("<2h", 0, 2)  # qform_code 0, sform_code 2
    raw[280:328] = struct.pack("<12f", 1.5, 0.7, 0, 0, 0, 1.5, 0, 0, 0, 0, 2.0, 0)
    path.write_bytes(gzip.compress(bytes(raw)))


def _overflowing_scale(path: Path, kind):
    """Integer voxels, scl_slope 1e36: every stored value is finite, ITK's scaled ones are
    not (audit wrote hu_min -Infinity into its JSON, infer segmented the scan)."""
    import gzip
    import struct

    write_volume(path, image() if kind == "image" else label(), geom(SHAPE))
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[112:120] = struct.pack("<2f", 1e36, 0.0)
    path.write_bytes(gzip.compress(bytes(raw)))


def _symlink_loop(path: Path, kind):
    path.symlink_to(path.name)  # Path.resolve raised on it, which stopped whole runs


def _broken_symlink(path: Path, kind):
    path.symlink_to("nowhere.nii.gz")


BAD_FILES = {
    "truncated": (_truncated, "truncated"),
    "empty": (_empty, "corrupt gzip|not a NIfTI-1 or NIfTI-2 header"),
    "not NIfTI inside": (_not_nifti, "corrupt gzip|not a NIfTI-1 or NIfTI-2 header"),
    "2-D": (_two_d, "2-D, expected 3-D"),
    "4-D": (_four_d, "4-D"),
    "vector": (_vector, "components per voxel"),
    "NaN voxels": (_nan, "NaN/inf voxels"),
    "inf once scaled": (_overflowing_scale, "NaN/inf voxels once scaled|outside 0..14"),
    "sheared orientation": (_sheared, r"orientation matrix \(sform or qform\) is not "
                                      "orthonormal"),
    "symlink loop": (_symlink_loop, "a symlink loop"),
    "broken symlink": (_broken_symlink, r"a broken symlink \(to nowhere.nii.gz\)"),
}
BAD_LABELS = {
    "label values outside 0..14": (_out_of_range, "outside 0..14"),
    "non-integer label values": (_float_label, "non-integer values"),
    "negative label values": (_negative_label, "outside 0..14"),
}


def assert_one_line_problem(res, case, message, code=4):
    assert res.code == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") and f" {case}" in ln]
    assert lines and any(re.search(message, ln) for ln in lines), res.stderr


def digest(folder: Path) -> dict[str, str]:
    """Every file under a folder with its content hash (inputs must not change)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the matrix -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_scans_in_infer_and_pseudolabel(bad, model_dir, tmp_path, run_cli):  # noqa: F811
    write, message = BAD_FILES[bad]
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "good_0000.nii.gz", image(), geom(SHAPE))
    write(tmp_path / "in" / "bad_0000.nii.gz", "image")
    before = digest(tmp_path / "in")
    for command in ("infer", "pseudolabel"):
        res = run_cli(command, tmp_path / "in", tmp_path / command, "--model", model_dir,
                      "--device", "cpu")
        assert_one_line_problem(res, "bad", message)
        assert (tmp_path / command / "good.nii.gz").is_file()
        assert not (tmp_path / command / "bad.nii.gz").exists()
    assert digest(tmp_path / "in") == before


@pytest.mark.parametrize("bad", list(BAD_FILES) + list(BAD_LABELS),
                         ids=list(BAD_FILES) + list(BAD_LABELS))
def test_bad_label_maps_in_postprocess_evaluate_and_correct(bad, tmp_path, run_cli):
    write, message = {**BAD_FILES, **BAD_LABELS}[bad]
    for folder in ("pred", "gt", "img"):
        (tmp_path / folder).mkdir()
    for case in ("good", "bad"):
        write_volume(tmp_path / "gt" / f"{case}.nii.gz", label(), geom(SHAPE))
        write_volume(tmp_path / "img" / f"{case}_0000.nii.gz", image(), geom(SHAPE))
    write_volume(tmp_path / "pred" / "good.nii.gz", label((1, 3)), geom(SHAPE))
    write(tmp_path / "pred" / "bad.nii.gz", "label")
    before = {f: digest(tmp_path / f) for f in ("pred", "gt", "img")}
    res = run_cli("postprocess", tmp_path / "pred", tmp_path / "post")
    assert_one_line_problem(res, "bad", message)
    assert (tmp_path / "post" / "good.nii.gz").is_file()
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "s.json")
    assert_one_line_problem(res, "bad", message)
    assert json.loads((tmp_path / "s.json").read_text())["scored_cases"] == 1
    res = run_cli("correct", tmp_path / "pred", tmp_path / "gt", tmp_path / "fixed", "--images",
                  tmp_path / "img")
    assert_one_line_problem(res, "bad", message)
    assert (tmp_path / "fixed" / "good.nii.gz").is_file()
    assert {f: digest(tmp_path / f) for f in ("pred", "gt", "img")} == before


@pytest.mark.parametrize("bad", list(BAD_FILES) + list(BAD_LABELS) + ["another grid"],
                         ids=list(BAD_FILES) + list(BAD_LABELS) + ["another grid"])
def test_bad_cases_in_audit_and_train(bad, tmp_path, run_cli):
    data = tmp_path / "data"
    for i in range(3):
        blob_case(data, f"good{i}", i)
    if bad == "another grid":
        blob_case(data, "bad", 9)
        write_volume(data / "labelsTr" / "bad.nii.gz", label(), geom(SHAPE))
        message = "image vs label shape"
    elif bad in BAD_LABELS:
        write, message = BAD_LABELS[bad]
        write_volume(data / "imagesTr" / "bad_0000.nii.gz", image(), geom(SHAPE))
        write(data / "labelsTr" / "bad.nii.gz", "label")
    else:
        write, message = BAD_FILES[bad]
        write(data / "imagesTr" / "bad_0000.nii.gz", "image")
        write_volume(data / "labelsTr" / "bad.nii.gz", label(), geom(SHAPE))
    before = digest(data)
    res = run_cli("audit", data, "--json", tmp_path / "audit.json")
    assert_one_line_problem(res, "bad", message)
    res = run_cli("train", data, "--out", tmp_path / "m", "--stage", "organs", "--preset",
                  "smoke", "--device", "cpu", "--iterations", "1")
    assert_one_line_problem(res, "bad", message)  # reported, left out ...
    assert (tmp_path / "m" / "organs" / "model.json").is_file()  # ... and the rest trained
    config = json.loads((tmp_path / "m" / "organs" / "config.json").read_text())
    assert "bad" not in {c for p in config["phases"] for c in (*p["cases"], *p["val_cases"])}
    assert digest(data) == before


def test_a_malformed_dataset_json_leaves_no_case_out_of_training(tmp_path, run_cli):
    data = tmp_path / "data"
    for i in range(3):
        blob_case(data, f"good{i}", i)
    (data / "dataset.json").write_text('{"labels": {"background": 0,')
    res = run_cli("train", data, "--out", tmp_path / "m", "--stage", "organs", "--preset",
                  "smoke", "--device", "cpu", "--iterations", "1", "--val-fraction", "0")
    assert_one_line_problem(res, str(data / "dataset.json"), "unreadable dataset.json")
    # the summary counts the file as a file, not as a case left out of training
    assert "1 of 4 cases/files had problems" in res.stderr and "left out" not in res.stderr
    config = json.loads((tmp_path / "m" / "organs" / "config.json").read_text())
    assert {c for p in config["phases"] for c in p["cases"]} == {"good0", "good1", "good2"}


def test_train_stops_when_too_few_cases_remain(tmp_path, run_cli):
    data = tmp_path / "data"
    blob_case(data, "good", 0)
    for i in range(2):
        _truncated(data / "imagesTr" / f"bad{i}_0000.nii.gz", "image")
        write_volume(data / "labelsTr" / f"bad{i}.nii.gz", label(), geom(SHAPE))
    res = run_cli("train", data, "--out", tmp_path / "m", "--stage", "organs", "--preset",
                  "smoke", "--device", "cpu")
    assert res.code == 4 and "2 of 3 cases cannot be used" in res.stderr
    assert res.stderr.count("error: bad") == 2 and not (tmp_path / "m" / "organs").exists()


def test_stray_files_are_notes_and_odd_names_work(tmp_path, run_cli):
    folder = tmp_path / "labels"
    folder.mkdir()
    write_volume(folder / "cáse with spaces.nii.gz", label(), geom(SHAPE))
    (folder / "README.txt").write_text("notes")
    (folder / "sub").mkdir()
    res = run_cli("postprocess", folder, tmp_path / "out")
    assert res.code == 0, res.stderr
    assert "note:" in res.stderr and "README.txt" in res.stderr and "error" not in res.stderr
    assert (tmp_path / "out" / "cáse with spaces.nii.gz").is_file()


def test_duplicate_cases_are_reported_not_resolved(model_dir, tmp_path, run_cli):  # noqa: F811
    for folder in ("pred", "gt", "in"):
        (tmp_path / folder).mkdir()
    write_volume(tmp_path / "pred" / "x.nii.gz", label(), geom(SHAPE))
    write_volume(tmp_path / "pred" / "x.nii", label((3,)), geom(SHAPE))
    write_volume(tmp_path / "pred" / "y.nii.gz", label(), geom(SHAPE))
    for case in ("x", "y"):
        write_volume(tmp_path / "gt" / f"{case}.nii.gz", label(), geom(SHAPE))
        write_volume(tmp_path / "in" / f"{case}_0000.nii.gz", image(), geom(SHAPE))
    write_volume(tmp_path / "in" / "x_0000.nii", image(), geom(SHAPE))
    for args in (("postprocess", tmp_path / "pred", tmp_path / "post"),
                 ("evaluate", tmp_path / "pred", tmp_path / "gt"),
                 ("infer", tmp_path / "in", tmp_path / "inf", "--model", model_dir,
                  "--device", "cpu"),
                 ("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model_dir,
                  "--device", "cpu")):
        res = run_cli(*args)
        assert_one_line_problem(res, "x", "duplicate")
    assert not (tmp_path / "post" / "x.nii.gz").exists()
    assert (tmp_path / "post" / "y.nii.gz").exists()


# ---- outputs onto inputs, unwritable places --------------------------------------------------

def _link_variants(target: Path, tmp_path: Path) -> dict[str, Path]:
    """The same file named four ways: itself, a symlink, a hard link, a path through '..'."""
    (tmp_path / "links").mkdir(exist_ok=True)
    sym, hard = tmp_path / "links" / "sym.json", tmp_path / "links" / "hard.json"
    sym.symlink_to(target)
    os.link(target, hard)
    dotted = target.parent / ".." / target.parent.name / target.name
    return {"itself": target, "symlink": sym, "hard link": hard, "dotted": dotted}


@pytest.mark.parametrize("how", ["itself", "symlink", "hard link", "dotted"])
def test_a_report_never_replaces_an_input(how, model_dir, tmp_path, run_cli):  # noqa: F811
    data = tmp_path / "data"
    blob_case(data, "a", 0)
    gt = data / "labelsTr" / "a.nii.gz"
    scan = data / "imagesTr" / "a_0000.nii.gz"
    before = digest(data)
    cases = [
        ("evaluate", [data / "labelsTr", data / "labelsTr", "--json"], gt),
        ("audit", [data, "--json"], scan),
        ("audit", [data, "--csv"], gt),
        ("infer", [data / "imagesTr", tmp_path / "out", "--model", model_dir, "--device",
                   "cpu", "--profile"], scan),
    ]
    for n, (command, args, target) in enumerate(cases):
        (tmp_path / f"v{n}").mkdir()
        path = _link_variants(target, tmp_path / f"v{n}")[how]
        res = run_cli(command, *args, path)
        assert res.code == 3, (command, res.stderr)
        assert "input" in res.stderr or "among the cases" in res.stderr, res.stderr
    assert digest(data) == before


def test_reports_may_go_beside_the_dataset_but_not_among_its_cases(tmp_path, run_cli):
    data = tmp_path / "data"
    blob_case(data, "a", 0)
    res = run_cli("audit", data, "--json", data / "imagesTr" / "audit.json")
    assert res.code == 3 and "among the cases" in res.stderr
    assert not (data / "imagesTr" / "audit.json").exists()
    res = run_cli("audit", data, "--json", data / "audit.json")
    assert res.code == 0 and (data / "audit.json").is_file()


def test_output_folders_that_are_inputs_or_inside_them(model_dir, tmp_path, run_cli):  # noqa: F811
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", image(), geom(SHAPE))
    for out in (tmp_path / "in", tmp_path / "in" / "sub", model_dir / "predictions"):
        res = run_cli("infer", tmp_path / "in", out, "--model", model_dir, "--device", "cpu")
        assert res.code == 3 and "input folder" in res.stderr, res.stderr
    assert not (model_dir / "predictions").exists()
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "in" / "x")
    assert res.code == 3
    blob_case(tmp_path / "data", "a", 0)
    res = run_cli("train", tmp_path / "data", "--out", tmp_path / "data" / "imagesTr" / "m",
                  "--stage", "organs", "--preset", "smoke", "--device", "cpu")
    assert res.code == 3 and "input folder" in res.stderr


UNWRITABLE = ["a file where a folder is expected", "under /proc", "EACCES"]


@pytest.mark.parametrize("how", UNWRITABLE)
def test_unwritable_outputs_fail_before_the_work(how, model_dir, tmp_path, run_cli,  # noqa: F811
                                                  monkeypatch):
    data = tmp_path / "data"
    blob_case(data, "a", 0)
    (tmp_path / "afile").write_text("x")
    if how == "a file where a folder is expected":
        place = tmp_path / "afile" / "sub"
    elif how == "under /proc":
        place = Path("/proc/flare-test/sub")
    else:
        place = tmp_path / "denied"
        real = os.open

        def deny(path, *args, **kw):
            if str(path).startswith(str(place)):
                raise PermissionError(13, "Permission denied")
            return real(path, *args, **kw)

        monkeypatch.setattr(os, "open", deny)
    commands = [
        ("synth", [place, "--train", "1", "--unlabeled", "0", "--test", "0", "--size", "32"]),
        ("audit", [data, "--json", place / "a.json"]),
        ("evaluate", [data / "labelsTr", data / "labelsTr", "--csv", place / "s.csv"]),
        ("postprocess", [data / "labelsTr", place]),
        ("infer", [data / "imagesTr", place, "--model", model_dir, "--device", "cpu"]),
        ("infer", [data / "imagesTr", tmp_path / "ok", "--model", model_dir, "--device", "cpu",
                   "--profile", place / "p.json"]),
        ("train", [data, "--out", place, "--stage", "organs", "--preset", "smoke", "--device",
                   "cpu"]),
        ("demo", [place, "--preset", "smoke", "--device", "cpu"]),
    ]
    for command, args in commands:
        res = run_cli(command, *args)
        assert res.code == 3, (command, res.stderr)
        assert "Traceback" not in res.stderr
        assert len([ln for ln in res.stderr.splitlines() if ln.startswith("flare: error")]) == 1
    assert not (tmp_path / "ok").exists() or not list((tmp_path / "ok").glob("*.nii.gz"))


# ---- writes that fail mid-run --------------------------------------------------------------

def test_a_full_disk_stops_the_run_with_one_line(model_dir, tmp_path, run_cli,  # noqa: F811
                                                 monkeypatch):
    from flarecli.core.io import nifti

    (tmp_path / "in").mkdir()
    for i in range(4):
        write_volume(tmp_path / "in" / f"c{i}_0000.nii.gz", image(), geom(SHAPE))
    real = sitk.WriteImage
    written = []

    def fill_up(img, path, *args, **kw):
        if len(written) >= 1:  # the disk fills after the first scan
            real(img, path, *args, **kw)
            Path(path).write_bytes(b"\0" * 10)  # the write got part of the way
            raise RuntimeError("ITK ERROR: Could not write file")
        written.append(path)
        return real(img, path, *args, **kw)

    monkeypatch.setattr(sitk, "WriteImage", fill_up)
    monkeypatch.setattr(nifti.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(100, 100, 0))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu")
    assert res.code == 4 and "no space left on the device" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".gz") == [
        "c0.nii.gz"]
    assert not [p for p in (tmp_path / "out").iterdir()
                if p.name.startswith(".") and p.name != WRITTEN]


def test_a_failed_write_fails_that_case_only(tmp_path, run_cli, monkeypatch):
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_volume(tmp_path / "in" / f"c{i}.nii.gz", label(), geom(SHAPE))
    real = sitk.WriteImage

    def flaky(img, path, *args, **kw):
        if Path(path).name.startswith(".c1.nii.gz"):
            raise RuntimeError("ITK ERROR: Could not write file")
        return real(img, path, *args, **kw)

    monkeypatch.setattr(sitk, "WriteImage", flaky)
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    assert_one_line_problem(res, "c1", "cannot be written")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        WRITTEN, "c0.nii.gz", "c2.nii.gz", "postprocess.json"]


def test_outputs_follow_the_umask(tmp_path, run_cli):
    from flarecli.core.io import files

    old = os.umask(0o022)
    try:
        (tmp_path / "in").mkdir()
        write_volume(tmp_path / "in" / "a.nii.gz", label(), geom(SHAPE))
        assert files._UMASK in (0o022, os.umask(0o022))
        res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
        assert res.code == 0
        mode = (tmp_path / "out" / "a.nii.gz").stat().st_mode & 0o777
        assert mode == 0o666 & ~files._UMASK, oct(mode)
        res = run_cli("evaluate", tmp_path / "out", tmp_path / "in", "--json",
                      tmp_path / "s.json")
        assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o666 & ~files._UMASK
    finally:
        os.umask(old)


def test_stale_temporary_files_of_dead_runs_are_removed(tmp_path, run_cli):
    from flarecli.core.io.files import _HOST

    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a.nii.gz", label(), geom(SHAPE))
    (tmp_path / "out").mkdir()
    dead = tmp_path / "out" / f".a.nii.gz.{_HOST}-999999.abc123.part.nii.gz"
    alive = tmp_path / "out" / f".b.nii.gz.{_HOST}-{os.getppid()}.abc123.part.nii.gz"
    other = tmp_path / "out" / ".a.nii.gz.otherhost-999999.abc123.part.nii.gz"
    for p in (dead, alive, other):
        p.write_bytes(b"half")
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    assert res.code == 0
    assert not dead.exists() and alive.exists() and other.exists()


def test_a_case_name_near_the_file_systems_limit_is_written(tmp_path, run_cli):
    """A 247-byte file name fits (255), but its temporary name did not: every write of such
    a case failed with 'File name too long'."""
    from flarecli.core.io.files import _HOST, _part_key, atomic_path

    case = "c" * 240
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / f"{case}.nii.gz", label(), geom(SHAPE))
    (tmp_path / "out").mkdir()
    dead = tmp_path / "out" / f".{_part_key(case + '.nii.gz')}.{_HOST}-999999.abc.part.nii.gz"
    dead.write_bytes(b"half")
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    assert res.code == 0, res.stderr
    assert (tmp_path / "out" / f"{case}.nii.gz").is_file() and not dead.exists()
    with atomic_path(tmp_path / "out" / "[x].nii.gz") as tmp:  # a glob character in a name
        tmp.write_bytes(b"x")
    assert (tmp_path / "out" / "[x].nii.gz").read_bytes() == b"x"


# ---- numbers, bundles, manifests -------------------------------------------------------------

def test_invalid_numbers_are_refused(tmp_path, run_cli):
    blob_case(tmp_path / "data", "a", 0)
    (tmp_path / "l").mkdir()
    write_volume(tmp_path / "l" / "a.nii.gz", label(), geom(SHAPE))
    checks = [
        (["postprocess", tmp_path / "l", tmp_path / "o", "--min-tumor-mm3", "nan"], 3),
        (["postprocess", tmp_path / "l", tmp_path / "o", "--min-tumor-mm3", "inf"], 3),
        (["stats", tmp_path / "l", "--min-tumor-mm3", "nan", "--json", tmp_path / "o.json"], 3),
        (["stats", tmp_path / "l", "--min-tumor-mm3", "inf", "--json", tmp_path / "o.json"], 3),
        (["evaluate", tmp_path / "l", tmp_path / "l", "--min-lesion-mm3", "nan"], 3),
        (["evaluate", tmp_path / "l", tmp_path / "l", "--nsd-threshold", "nan"], 3),
        (["train", tmp_path / "data", "--out", tmp_path / "m", "--stage", "organs", "--lr",
          "nan"], 5),
        (["train", tmp_path / "data", "--out", tmp_path / "m", "--stage", "organs",
          "--val-fraction", "nan"], 5),
    ]
    for args, code in checks:
        res = run_cli(*args)
        assert res.code == code, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "m" / "organs").exists()
    assert not (tmp_path / "o.json").exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, run_cli):
    from flarecli.core.errors import ModelError
    from flarecli.core.training.options import Progress
    from flarecli.core.training.run import train
    from tests.conftest import tiny_recipe, train_run

    blob_case(tmp_path / "data", "a", 0)
    train(train_run(tmp_path / "data", tmp_path / "m", recipe=tiny_recipe(epochs=1,
                                                                          iterations=2)))
    run = tmp_path / "m" / "organs"
    ckpt = (run / "checkpoint_last.pt").read_bytes()
    huge = tiny_recipe(epochs=2, iterations=2, optimizer={"name": "sgd", "lr": 1e30,
                                                          "grad_clip": 1e30})
    with pytest.raises(ModelError, match="not finite"):
        train(train_run(tmp_path / "data", tmp_path / "m2", recipe=huge),
              progress=Progress())
    assert not (tmp_path / "m2" / "organs" / "weights_final.pt").exists()
    assert (run / "checkpoint_last.pt").read_bytes() == ckpt


MALFORMED = {
    "no sha256": lambda m: m["weights"]["final"].pop("sha256"),
    "weights as a string": lambda m: m.update(weights="weights_final.pt"),
    "absurd input size": lambda m: m["stage"]["geometry"].update(size_zyx=[100000, 16, 16]),
    "intensity std 0": lambda m: m["intensity"].update(std=0.0),
    "weights outside the folder": lambda m: m["weights"]["final"].update(
        file="../../etc/passwd"),
    "unknown stage field": lambda m: m["stage"].update(colour="red"),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_bundles_are_one_line_exit_5(what, model_dir, tmp_path, run_cli):  # noqa: F811
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / "organs" / "model.json").read_text())
    MALFORMED[what](meta)
    save_model_json(folder / "organs" / "model.json", meta)
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", image(), geom(SHAPE))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", folder, "--device",
                  "cpu")
    assert res.code == 5, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("flare: error: ")


def test_bundles_missing_tampered_or_pickled(model_dir, tmp_path, run_cli):  # noqa: F811
    import torch

    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", image(), geom(SHAPE))
    for damage in ("missing", "tampered", "pickled", "no model.json"):
        folder = tmp_path / damage
        shutil.copytree(model_dir, folder)
        weights = folder / "organs" / "weights_final.pt"
        if damage == "missing":
            weights.unlink()
        elif damage == "tampered":
            data = bytearray(weights.read_bytes())
            data[-50] ^= 0xFF
            weights.write_bytes(bytes(data))
        elif damage == "pickled":
            class Evil:
                def __reduce__(self):
                    return (os.system, ("touch " + str(tmp_path / "pwned"),))

            torch.save({"x": Evil()}, weights)
            meta = json.loads((folder / "organs" / "model.json").read_text())
            meta["weights"]["final"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
            if "bytes" in meta["weights"]["final"]:  # resealed as a forger would
                meta["weights"]["final"]["bytes"] = weights.stat().st_size
            save_model_json(folder / "organs" / "model.json", meta)
        else:
            (folder / "organs" / "model.json").unlink()
        res = run_cli("infer", tmp_path / "in", tmp_path / f"out-{damage}", "--model", folder,
                      "--device", "cpu")
        assert res.code == 5, (damage, res.stderr)
        if damage == "pickled":  # refused as such, without torch's advice to unpickle it
            assert "holds Python objects beyond tensors" in res.stderr, res.stderr
            assert "weights_only" not in res.stderr and "Warning" not in res.stderr
    assert not (tmp_path / "pwned").exists()


def test_manifest_ids_that_cannot_name_a_file_are_refused(tmp_path, run_cli):
    blob_case(tmp_path / "data", "a", 0)
    blob_case(tmp_path / "data", "b", 1)
    entry = {"image": str(tmp_path / "data" / "imagesTr" / "a_0000.nii.gz"),
             "label": str(tmp_path / "data" / "labelsTr" / "a.nii.gz"), "kind": "FL",
             "annotated": [1, 3, 13]}
    manifest = {"cases": [{**entry, "id": "../../../escape"}, {**entry, "id": "ok1"},
                          {**entry, "id": "ok2"}, {**entry, "id": "ok3"},
                          {**entry, "id": "strings", "annotated": ["1", "3"]}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("train", tmp_path / "m.json", "--out", tmp_path / "m", "--stage", "organs",
                  "--preset", "smoke", "--device", "cpu", "--cache", tmp_path / "cache" / "x")
    assert res.code == 4 and "path separator" in res.stderr
    assert_one_line_problem(res, "strings", r"'annotated' must be a list of class ids 1\.\.14")
    assert not list(tmp_path.glob("escape*")) and not (tmp_path / "cache" / "escape").exists()
    assert not list((tmp_path / "cache").rglob("*escape*"))


def test_a_manifest_with_missing_or_doubled_cases_trains_on_the_rest(tmp_path, run_cli):
    """A label deleted after the audit, a label that is no path, and an id listed twice (two
    manifests merged): one line each, exit 4, the other cases trained on, no traceback."""
    good = ["d", "e", "f", "g", "h", "i"]
    for n, case in enumerate(["a", "b", "c", *good]):
        blob_case(tmp_path / "data", case, n)

    def entry(case, **more):
        return {"id": case, "image": str(tmp_path / "data" / "imagesTr" / f"{case}_0000.nii.gz"),
                "label": str(tmp_path / "data" / "labelsTr" / f"{case}.nii.gz"), "kind": "FL",
                "annotated": [1, 3, 13], **more}

    (tmp_path / "data" / "labelsTr" / "a.nii.gz").unlink()
    manifest = {"cases": [entry("a"), entry("b", label=5), entry("c"), entry("c"),
                          *map(entry, good)]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("train", tmp_path / "m.json", "--out", tmp_path / "m", "--stage", "organs",
                  "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--iterations", "1")
    assert_one_line_problem(res, "a", r"a\.nii\.gz: label file not found")
    assert_one_line_problem(res, "b", r"'label' must be a path, not 5")
    assert_one_line_problem(res, "c", r"listed 2 times in m\.json")
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error: c")]) == 1
    config = json.loads((tmp_path / "m" / "organs" / "config.json").read_text())
    trained = sorted(i for p in config["phases"] for i in (*p["cases"], *p["val_cases"]))
    assert trained == good


@pytest.mark.parametrize("manifest, message", [
    ({"schema_version": 1}, "no 'cases' list"),
    ({"schema_version": 1, "cases": [1]}, "case 1 is not a case"),
    ({"schema_version": 1, "cases": [{"organs": [1]}]}, "case 1 is not a case"),
    ({"schema_version": 1, "cases": [{"id": "a", "organs": None}]}, "'organs' must be a list"),
    ({"schema_version": 1, "cases": [{"id": "a", "organs": 5}]}, "'organs' must be a list"),
    ({"schema_version": 1, "cases": [{"id": "a", "organs": ["1"]}]}, "'organs' must be a list"),
    ({"schema_version": 1, "cases": [{"id": "a", "organs": [14]}]}, "class ids 1..13"),
    ({"schema_version": 1, "cases": [{"id": "a", "tumor": "yes"}]}, "'tumor' must be true"),
], ids=["no cases", "not an object", "no id", "null", "a number", "strings", "tumor as organ",
        "tumor not a bool"])
def test_a_hand_written_manifest_is_checked_before_evaluating(manifest, message, tmp_path,
                                                               run_cli):
    write_volume(tmp_path / "gt" / "a.nii.gz", label(), geom(SHAPE))
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("evaluate", tmp_path / "gt", tmp_path / "gt", "--manifest", tmp_path / "m.json")
    assert res.code == 3 and "Traceback" not in res.stderr
    assert "m.json" in res.stderr and message in res.stderr, res.stderr
    manifest = {"schema_version": 1, "cases": [{"id": "a", "organs": [1], "tumor": False}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))  # a good one scores liver only
    res = run_cli("evaluate", tmp_path / "gt", tmp_path / "gt", "--manifest", tmp_path / "m.json",
                  "--json", tmp_path / "s.json")
    assert res.code == 0, res.stderr
    per_class = json.loads((tmp_path / "s.json").read_text())["per_class"]
    assert per_class["1"]["n"] == 1 and per_class["2"]["n"] == 0


def test_manifests_written_elsewhere_still_work(tmp_path, run_cli, monkeypatch):
    blob_case(tmp_path / "data", "a", 0)
    monkeypatch.chdir(tmp_path)
    res = run_cli("audit", "data", "--json", "audit.json")
    assert res.code == 0
    paths = json.loads((tmp_path / "audit.json").read_text())["cases"][0]
    assert Path(paths["image"]).is_absolute() and Path(paths["label"]).is_absolute()
    monkeypatch.chdir(tmp_path / "data")
    res = run_cli("train", tmp_path / "audit.json", "--out", tmp_path / "m", "--stage",
                  "teacher", "--data", "labeled", "--preset", "smoke", "--device", "cpu")
    assert res.code == 0, res.stderr
    # self-training weighs data kinds: a kind without a weight is refused before training
    res = run_cli("train", tmp_path / "audit.json", "--out", tmp_path / "m", "--stage",
                  "organs", "--data", "labeled", "--preset", "smoke", "--device", "cpu")
    assert res.code == 5 and "kind 'partial'" in res.stderr and "Traceback" not in res.stderr


def test_a_refused_synth_leaves_nothing(tmp_path, run_cli):
    res = run_cli("synth", tmp_path / "d", "--size", "8")
    assert res.code == 3 and not (tmp_path / "d").exists()
    res = run_cli("synth", tmp_path / "d", "--train", "1", "--unlabeled", "0", "--test", "0",
                  "--size", "32")
    assert res.code == 0


def test_infer_into_a_folder_another_model_filled(model_dir, tmp_path, run_cli):  # noqa: F811
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz", image(), geom(SHAPE))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir, "--device",
                  "cpu")
    assert res.code == 0
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    shutil.copy(other / "tumor" / "weights_final.pt", tmp_path / "w.pt")
    meta = json.loads((other / "organs" / "model.json").read_text())
    meta["default_weights"] = "final"
    save_model_json(other / "organs" / "model.json", meta)
    tumor = json.loads((other / "tumor" / "model.json").read_text())
    tumor["weights"]["final"]["sha256"] = hashlib.sha256(b"").hexdigest()
    shutil.rmtree(other / "tumor")  # another model: no tumor stage
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", other, "--device",
                  "cpu")
    assert res.code == 3 and "holds outputs of another model" in res.stderr
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", other, "--device",
                  "cpu", "--overwrite")
    assert res.code == 0
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert set(record["model_sha256"]) == {"coarse", "organs"}


def test_a_rerun_with_other_output_settings_is_refused_not_kept(model_dir, tmp_path,  # noqa: F811
                                                                run_cli):
    """A re-run keeps the outputs already there: with other post-processing (or TTA) they
    would be outputs of the old settings under a record claiming the new ones."""
    (tmp_path / "in").mkdir()
    for k in range(2):
        write_volume(tmp_path / "in" / f"a{k}_0000.nii.gz", image(), geom(SHAPE))
    common = ("--model", model_dir, "--device", "cpu")
    assert run_cli("infer", tmp_path / "in", tmp_path / "out", *common).code == 0
    before = digest(tmp_path / "out")
    for other in (["--no-postprocess"], ["--min-tumor-mm3", "5000"], ["--tta"]):
        res = run_cli("infer", tmp_path / "in", tmp_path / "out", *common, *other)
        assert res.code == 3, res.stderr
        assert "holds outputs made with other settings" in res.stderr, res.stderr
        assert digest(tmp_path / "out") == before  # outputs and record untouched
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", *common)  # the same: a resume
    assert res.code == 0 and "skipped 2 existing" in res.stdout
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", *common, "--no-postprocess",
                  "--overwrite")
    assert res.code == 0
    assert json.loads((tmp_path / "out" / "infer.json").read_text())["postprocess"] is None


@pytest.mark.parametrize("command", ["infer", "pseudolabel"])
def test_an_output_made_from_another_scan_is_not_kept(command, model_dir, tmp_path,  # noqa: F811
                                                       run_cli):
    """Folder B's scan has folder A's name and grid and an older date (exported before the
    first run): the output A's scan gave is computed again from B's, with a note, and the
    record names B's scan; an unchanged resume still keeps it."""
    rng = np.random.default_rng(3)
    for folder, hu in (("A", 0), ("B", 300)):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "a_0000.nii.gz",
                     (image() + hu + rng.normal(0, 30, SHAPE)).astype(np.int16), geom(SHAPE))
    os.utime(tmp_path / "B" / "a_0000.nii.gz", ns=(10**9, 10**9))
    common = ("--model", model_dir, "--device", "cpu")
    assert run_cli(command, tmp_path / "A", tmp_path / "out", *common).code == 0
    assert run_cli(command, tmp_path / "B", tmp_path / "ref", *common).code == 0
    res = run_cli(command, tmp_path / "B", tmp_path / "out", *common)
    assert res.code == 0, res.stderr
    assert f"it was made from {tmp_path / 'A' / 'a_0000.nii.gz'}; computed again" in res.stderr
    assert np.array_equal(read_volume(tmp_path / "out" / "a.nii.gz")[0],
                          read_volume(tmp_path / "ref" / "a.nii.gz")[0])
    record = json.loads((tmp_path / "out" / f"{command}.json").read_text())
    assert record["scans"][0]["image"] == str(tmp_path / "B" / "a_0000.nii.gz")
    res = run_cli(command, tmp_path / "B", tmp_path / "out", *common)
    assert res.code == 0 and "computed again" not in res.stderr


def test_postprocess_reruns_with_its_own_settings_only(tmp_path, run_cli):
    data = tmp_path / "data"
    blob_case(data, "c0", 1)
    labels = data / "labelsTr"
    assert run_cli("postprocess", labels, tmp_path / "pp").code == 0
    kept = (tmp_path / "pp" / "c0.nii.gz").read_bytes()
    res = run_cli("postprocess", labels, tmp_path / "pp", "--min-tumor-mm3", "5000")
    assert res.code == 3 and "min_tumor_mm3 100.0 (now 5000.0)" in res.stderr, res.stderr
    assert (tmp_path / "pp" / "c0.nii.gz").read_bytes() == kept
    res = run_cli("postprocess", labels, tmp_path / "pp", "--connectivity", "6", "--overwrite")
    assert res.code == 0 and "postprocessed 1 case" in res.stdout
    assert json.loads((tmp_path / "pp" / "postprocess.json").read_text()) == \
        {"connectivity": 6, "min_tumor_mm3": 100.0, "input": str(labels.resolve())}
    assert run_cli("postprocess", labels, tmp_path / "pp", "--connectivity", "6").code == 0


def test_empty_and_missing_inputs(model_dir, tmp_path, run_cli):  # noqa: F811
    (tmp_path / "empty").mkdir()
    for args in (("infer", tmp_path / "empty", tmp_path / "o", "--model", model_dir),
                 ("infer", tmp_path / "missing", tmp_path / "o", "--model", model_dir),
                 ("postprocess", tmp_path / "empty", tmp_path / "o"),
                 ("evaluate", tmp_path / "empty", tmp_path / "empty"),
                 ("audit", tmp_path / "missing"),
                 ("train", tmp_path / "missing", "--out", tmp_path / "m", "--stage", "organs"),
                 ("preview", tmp_path / "empty", tmp_path / "empty", tmp_path / "o"),
                 ("stats", tmp_path / "empty")):
        res = run_cli(*args)
        assert res.code == 3, (args, res.stderr)
        assert res.stderr.startswith("flare: error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()  # nothing made for a run that does nothing
    res = run_cli("synth", tmp_path / "s", "--seed", "-1")  # numpy refused it: a traceback
    assert res.code == 2 and "Traceback" not in res.stderr and not (tmp_path / "s").exists()


def test_a_json_file_with_a_byte_order_mark_is_read(tmp_path):
    from flarecli.core.io.files import read_json

    (tmp_path / "dataset.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(tmp_path / "dataset.json", "dataset.json") == {"a": 1}
