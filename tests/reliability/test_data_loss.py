"""Nothing lost: a full disk never leaves a short output under its final name, a re-run never
trusts an output it cannot read back whole, and no report replaces an input or another
output of the same run (exit code 3 before any work)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from flarecli.core.errors import DiskFull, WriteFailed
from flarecli.core.io.files import damaged, kept
from flarecli.core.io.nifti import write_volume
from flarecli.core.io.outputs import WRITTEN
from tests.conftest import blob_case, geom
from tests.reliability.test_bad_inputs import digest

SHAPE = (20, 24, 28)


def labels() -> np.ndarray:
    """A label map whose .nii.gz is a few kB (noise inside a box compresses poorly)."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:16, 5:20, 6:22] = np.random.default_rng(0).integers(0, 15, (12, 15, 16))
    return lab


def short_write(keep: int):
    """SimpleITK's WriteImage as it behaves on a full disk: the first ``keep`` bytes reach
    the file, the rest is lost, and no error is raised."""
    real = sitk.WriteImage

    def write(image, path, *args, **kw):
        real(image, path, *args, **kw)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:keep])

    return write


@pytest.mark.parametrize("keep", [0, 300, -8])
def test_a_short_write_is_never_renamed_into_place(keep, tmp_path, monkeypatch):
    target = tmp_path / "out" / "case.nii.gz"
    monkeypatch.setattr(sitk, "WriteImage", short_write(keep))
    with pytest.raises(WriteFailed) as info:
        write_volume(target, labels(), geom(SHAPE))
    assert not isinstance(info.value, DiskFull)  # the disk has room: a write error, named
    assert str(target) in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []  # neither the output nor its .part


def test_a_short_write_on_a_full_disk_is_disk_full(tmp_path, monkeypatch):
    import flarecli.core.io.nifti as nifti

    monkeypatch.setattr(sitk, "WriteImage", short_write(100))
    monkeypatch.setattr(nifti.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**6, 10**6, 0))
    with pytest.raises(DiskFull):
        write_volume(tmp_path / "case.nii.gz", labels(), geom(SHAPE))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_damaged_tells_whole_from_cut_files(suffix, tmp_path):
    path = tmp_path / f"case{suffix}"
    write_volume(path, labels(), geom(SHAPE), compress=suffix == ".nii.gz")
    assert damaged(path) is None and kept(path)
    assert not kept(path, overwrite=True)
    data = path.read_bytes()
    assert len(data) > 1000
    for cut in (0, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        assert damaged(path) is not None, cut
        assert not kept(path)
    if suffix == ".nii.gz":  # a flipped byte inside the stream fails its CRC or its inflate
        bad = bytearray(data)
        bad[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(bad))
        assert damaged(path) is not None


def test_infer_recomputes_outputs_cut_short(tiny_model, tmp_path, run_cli):
    """What a full disk left behind, copied elsewhere and re-run: the empty and cut outputs
    are computed again (a note each), the whole one is kept, exit 0, every output whole."""
    scans = tmp_path / "scans"
    for i in range(3):
        blob_case(tmp_path / "d", f"c{i}", 10 + i)
    shutil.copytree(tmp_path / "d" / "imagesTr", scans)
    out = tmp_path / "out"
    model = tiny_model / "model"
    assert run_cli("infer", scans, out, "--model", model).code == 0
    whole = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    (out / "c0.nii.gz").write_bytes(b"")
    (out / "c1.nii.gz").write_bytes(whole["c1.nii.gz"][:200])
    kept_before = (out / "c2.nii.gz").stat().st_mtime_ns
    res = run_cli("infer", scans, out, "--model", model)
    assert res.code == 0, res.stderr
    assert "skipped 1 existing" in res.stdout
    for case in ("c0", "c1"):
        assert f"{out / case}.nii.gz: truncated gzip stream; computed again" in res.stderr
    assert (out / "c2.nii.gz").stat().st_mtime_ns == kept_before
    assert {p.name: p.read_bytes() for p in out.glob("*.nii.gz")} == whole


def test_outputs_older_than_their_inputs_are_computed_again(tiny_model, tmp_path, run_cli):
    """A scan replaced after it was segmented (same name, new content) kept its old
    segmentation on a re-run; so did a label map re-predicted before postprocess ran again."""
    scans = tmp_path / "scans"
    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 10 + i)
    shutil.copytree(tmp_path / "d" / "imagesTr", scans)
    out, post = tmp_path / "out", tmp_path / "post"
    model = tiny_model / "model"
    assert run_cli("infer", scans, out, "--model", model).code == 0
    assert run_cli("postprocess", out, post).code == 0
    kept_infer = (out / "c1.nii.gz").stat().st_mtime_ns
    kept_post = (post / "c1.nii.gz").stat().st_mtime_ns
    shutil.copy(tmp_path / "d" / "imagesTr" / "c1_0000.nii.gz", scans / "c0_0000.nii.gz")
    res = run_cli("infer", scans, out, "--model", model)
    assert res.code == 0 and "skipped 1 existing" in res.stdout, res.stderr
    assert f"{out / 'c0'}.nii.gz: its input changed after it was written; computed again" in (
        res.stderr)
    assert (out / "c1.nii.gz").stat().st_mtime_ns == kept_infer
    assert (out / "c0.nii.gz").read_bytes() == (out / "c1.nii.gz").read_bytes()
    res = run_cli("postprocess", out, post)
    assert res.code == 0 and "skipped 1 existing" in res.stdout, res.stderr
    assert "c0: its input changed after it was written; computed again" in res.stderr
    assert (post / "c1.nii.gz").stat().st_mtime_ns == kept_post
    assert (post / "c0.nii.gz").read_bytes() == (post / "c1.nii.gz").read_bytes()


def test_an_output_on_another_grid_than_its_scan_is_computed_again(tiny_model, tmp_path,
                                                                     run_cli):
    """A label map another tool left in the output folder, on another grid, was kept as
    this scan's segmentation."""
    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 10 + i)
    scans, out, model = tmp_path / "d" / "imagesTr", tmp_path / "out", tiny_model / "model"
    assert run_cli("infer", scans, out, "--model", model).code == 0
    whole = (out / "c0.nii.gz").read_bytes()
    write_volume(out / "c0.nii.gz", np.zeros((5, 5, 5), np.uint8), geom((5, 5, 5)))
    res = run_cli("infer", scans, out, "--model", model)
    assert res.code == 0 and "skipped 1 existing" in res.stdout, res.stderr
    assert f"{out / 'c0'}.nii.gz: it is not on its scan's grid" in res.stderr
    assert (out / "c0.nii.gz").read_bytes() == whole


def test_infer_names_the_case_a_full_disk_stopped(tiny_model, tmp_path, run_cli,
                                                  monkeypatch):
    import flarecli.core.io.nifti as nifti

    for i in range(3):
        blob_case(tmp_path / "d", f"c{i}", 10 + i)
    real, calls = sitk.WriteImage, []

    def write(image, path, *args, **kw):  # the second output finds the disk full
        real(image, path, *args, **kw)
        calls.append(path)
        if len(calls) >= 2:
            Path(path).write_bytes(Path(path).read_bytes()[:50])

    monkeypatch.setattr(sitk, "WriteImage", write)
    monkeypatch.setattr(nifti.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**6, 10**6, 0))
    out = tmp_path / "out"
    res = run_cli("infer", tmp_path / "d" / "imagesTr", out, "--model", tiny_model / "model")
    assert res.code == 4 and "Traceback" not in res.stderr
    assert f"{out / 'c1.nii.gz'}: no space left on the device" in res.stderr
    assert "not written: 1 more case (c2)" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [WRITTEN, "c0.nii.gz"]  # no part, no cut


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_infer_onto_a_real_full_disk(tiny_model, tmp_path, run_cli):
    """The reported case on a real 12 KiB tmpfs (needs root; skipped elsewhere)."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "12k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        for i in range(5):
            blob_case(tmp_path / "d", f"c{i}", 20 + i)
        res = run_cli("infer", tmp_path / "d" / "imagesTr", disk / "out", "--model",
                      tiny_model / "model")
        assert res.code == 4 and "no space left on the device" in res.stderr
        left = sorted(p for p in (disk / "out").iterdir() if p.name != WRITTEN)
        assert left and all(damaged(p) is None for p in left), left  # only whole files
        copy = tmp_path / "copy"
        shutil.copytree(disk / "out", copy)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    res = run_cli("infer", tmp_path / "d" / "imagesTr", copy, "--model", tiny_model / "model")
    assert res.code == 0, res.stderr
    assert all(damaged(p) is None for p in copy.glob("*.nii.gz"))
    assert len(list(copy.glob("*.nii.gz"))) == 5


def test_postprocess_and_correct_redo_cut_outputs(tmp_path, run_cli):
    blob_case(tmp_path / "d", "c0", 1)
    lab = tmp_path / "d" / "labelsTr"
    assert run_cli("postprocess", lab, tmp_path / "pp").code == 0
    good = (tmp_path / "pp" / "c0.nii.gz").read_bytes()
    (tmp_path / "pp" / "c0.nii.gz").write_bytes(good[:40])
    assert run_cli("postprocess", lab, tmp_path / "pp").code == 0
    assert (tmp_path / "pp" / "c0.nii.gz").read_bytes() == good
    images = ("--images", tmp_path / "d" / "imagesTr")
    assert run_cli("correct", lab, lab, tmp_path / "cor", *images).code == 0
    good = (tmp_path / "cor" / "c0.nii.gz").read_bytes()
    (tmp_path / "cor" / "c0.nii.gz").write_bytes(b"")
    assert run_cli("correct", lab, lab, tmp_path / "cor", *images).code == 0
    assert (tmp_path / "cor" / "c0.nii.gz").read_bytes() == good


# ---- reports never replace inputs, nor each other ------------------------------------------

@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "D"
    blob_case(root, "tr0", 0)
    blob_case(root, "ts0", 1, images="imagesTs", labels="labelsTs")
    (root / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1}}\n')
    return root


@pytest.mark.parametrize("option,path", [
    ("--json", "imagesTs/ts0_0000.nii.gz"),  # a CT audit does not read, in the dataset
    ("--csv", "imagesTs/../labelsTs/ts0.nii.gz"),
    ("--json", "imagesTs/ts0_0000.nii.gz/"),  # a trailing slash names the same file
    ("--json", "dataset.json"),  # audit reads it
    ("--json", "imagesTr/tr0_0000.nii.gz"),
    ("--csv", "labelsTs/report.csv"),  # among cases of the dataset
])
def test_audit_never_writes_over_the_dataset(option, path, dataset, run_cli):
    before = digest(dataset)
    res = run_cli("audit", dataset, option, f"{dataset}/{path}")
    assert res.code == 3, res.stderr
    assert res.stderr.startswith("flare: error:") and "Traceback" not in res.stderr
    assert digest(dataset) == before


def test_audit_report_beside_the_dataset_is_fine(dataset, run_cli):
    res = run_cli("audit", dataset, "--json", dataset / "audit.json")
    assert res.code in (0, 4), res.stderr
    assert (dataset / "audit.json").is_file()


def test_audit_replaces_its_own_reports_beside_a_dataset_but_no_other_file(dataset, run_cli):
    (dataset / "synth.json").write_text('{"synth": {"seed": 0}}\n')  # as flare synth writes
    (dataset / "notes.csv").write_text("case,comment\ntr0,check the liver\n")
    before = digest(dataset)
    for option, name in (("--csv", "synth.json"), ("--json", "synth.json"),
                         ("--csv", "notes.csv")):
        res = run_cli("audit", dataset, option, dataset / name)
        assert res.code == 3 and "would replace a file of the dataset" in res.stderr, \
            res.stderr
        assert digest(dataset) == before
    for _ in range(2):  # a second audit replaces the first one's reports
        res = run_cli("audit", dataset, "--json", dataset / "audit.json", "--csv",
                      dataset / "audit.csv")
        assert res.code in (0, 4), res.stderr
    assert (dataset / "synth.json").read_text() == '{"synth": {"seed": 0}}\n'


@pytest.mark.parametrize("command", ["audit", "evaluate", "stats"])
def test_two_outputs_of_one_run_are_never_one_file(command, dataset, tmp_path, run_cli):
    same = tmp_path / "report.txt"
    args = {"audit": [dataset],
            "evaluate": [dataset / "labelsTr", dataset / "labelsTr"],
            "stats": [dataset / "labelsTr"]}[command]
    for a, b in ((same, same), (same, tmp_path / "." / "report.txt")):
        res = run_cli(command, *args, "--json", a, "--csv", b)
        assert res.code == 3, res.stderr
        assert "--json and --csv name the same file" in res.stderr
    (tmp_path / "x").touch()
    os.link(tmp_path / "x", tmp_path / "y")
    res = run_cli(command, *args, "--json", tmp_path / "x", "--csv", tmp_path / "y")
    assert res.code == 3 and "name the same file" in res.stderr  # a hard link is one file
    assert not same.exists()


def test_infer_reports_never_replace_each_other_or_the_record(tiny_model, tmp_path, run_cli):
    blob_case(tmp_path / "d", "c0", 3)
    out = tmp_path / "out"
    model = tiny_model / "model"
    scans = tmp_path / "d" / "imagesTr"
    res = run_cli("infer", scans, out, "--model", model, "--profile", tmp_path / "r.json",
                  "--stats", tmp_path / "r.json")
    assert res.code == 3 and "--profile and --stats name the same file" in res.stderr
    res = run_cli("infer", scans, out, "--model", model, "--profile", out / "infer.json")
    assert res.code == 3 and "the run record name the same file" in res.stderr
    res = run_cli("pseudolabel", scans, out, "--model", model, "--scores",
                  out / "pseudolabel.json")
    assert res.code == 3 and "the run record name the same file" in res.stderr
    res = run_cli("infer", scans, out, "--model", model, "--stats", out / "c0.nii.gz")
    assert res.code == 3 and "has the name of a scan or label map" in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_pseudolabel_into_a_folder_of_annotations_replaces_none(tiny_model, tmp_path, run_cli):
    """A slip (``flare pseudolabel imagesTr labelsTr``) replaced every annotation with a
    pseudo-label, exit 0 and a note saying "its input changed"; ``--min-score`` deleted them.
    The label maps there were never flare's outputs: the run is refused before any work."""
    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 30 + i)
    images, annotations = tmp_path / "d" / "imagesTr", tmp_path / "d" / "labelsTr"
    before = digest(annotations)
    for extra in ([], ["--overwrite"], ["--min-score", "0.99"]):
        res = run_cli("pseudolabel", images, annotations, "--model", tiny_model / "model",
                      *extra)
        assert res.code == 3 and "Traceback" not in res.stderr, res.stderr
        assert f"{annotations}: holds 2 files that flare pseudolabel did not write" in \
            " ".join(res.stderr.split())
        assert digest(annotations) == before
    # other names among the annotations would be taken for annotations by audit and train
    blob_case(tmp_path / "u", "u0", 39, images="imagesUn", labels="labelsUn")
    res = run_cli("pseudolabel", tmp_path / "u" / "imagesUn", annotations, "--model",
                  tiny_model / "model")
    assert res.code == 3 and digest(annotations) == before
    # the same names in its own folder are its outputs: a re-run keeps or redoes them
    out = tmp_path / "pseudo"
    assert run_cli("pseudolabel", images, out, "--model", tiny_model / "model").code == 0
    assert run_cli("pseudolabel", images, out, "--model", tiny_model / "model",
                   "--overwrite").code == 0
    # ... but they are not infer's: infer would keep them as "existing" predictions
    res = run_cli("infer", images, out, "--model", tiny_model / "model")
    assert res.code == 3 and "that flare infer did not write" in " ".join(res.stderr.split())


def test_a_folder_written_before_the_ledger_still_resumes(tiny_model, tmp_path, run_cli):
    """Outputs an older flare wrote are known by the folder's run record (infer.json), or for
    postprocess by postprocess.json; a case the record calls skipped is not one of them."""
    from flarecli.core.io.outputs import WRITTEN

    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 80 + i)
    images, out = tmp_path / "d" / "imagesTr", tmp_path / "pred"
    assert run_cli("infer", images, out, "--model", tiny_model / "model").code == 0
    (out / WRITTEN).unlink()
    res = run_cli("infer", images, out, "--model", tiny_model / "model")
    assert res.code == 0 and "skipped 2 existing" in " ".join(res.stdout.split()), res.stdout
    assert run_cli("postprocess", out, tmp_path / "clean").code == 0
    (tmp_path / "clean" / WRITTEN).unlink()
    assert run_cli("postprocess", out, tmp_path / "clean").code == 0
    # an older flare adopted a foreign file and recorded it as skipped: not ours
    (out / WRITTEN).unlink(missing_ok=True)  # the resume above wrote nothing
    import json

    record = json.loads((out / "infer.json").read_text())
    for scan in record["scans"]:
        scan["skipped"] = True
    (out / "infer.json").write_text(json.dumps(record))
    res = run_cli("infer", images, out, "--model", tiny_model / "model")
    assert res.code == 3 and "holds 2 files" in " ".join(res.stderr.split())


def test_infer_never_adopts_another_tools_predictions_as_its_own(tiny_model, tmp_path,
                                                                  run_cli):
    """A folder of ground truth (or of nnU-Net's predictions) under the cases' names was
    "skipped 2 existing", recorded as the model's, and scored DSC 1.0 by evaluate."""
    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 40 + i)
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "d" / "labelsTr", other)
    res = run_cli("infer", tmp_path / "d" / "imagesTr", other, "--model", tiny_model / "model")
    assert res.code == 3 and "holds 2 files that flare infer did not write" in \
        " ".join(res.stderr.split())
    assert not (other / "infer.json").exists() and digest(other) == digest(tmp_path / "d" /
                                                                          "labelsTr")


def test_correct_never_writes_into_the_scans_folder_its_record_names(tiny_model, tmp_path,
                                                                      run_cli):
    """The scans pseudolabel's run record names are inputs of correct as much as --images:
    with the output folder set to them, both CTs were replaced by label maps (exit 0)."""
    scans, annotations = tmp_path / "scans", tmp_path / "labels"
    for i in range(2):
        blob_case(tmp_path / "d", f"c{i}", 50 + i)
        scans.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "d" / "imagesTr" / f"c{i}_0000.nii.gz", scans / f"c{i}.nii.gz")
    shutil.copytree(tmp_path / "d" / "labelsTr", annotations)
    assert run_cli("pseudolabel", scans, tmp_path / "pseudo", "--model",
                   tiny_model / "model").code == 0
    before = digest(scans)
    for extra in ([], ["--manifest", str(scans / "m.json")]):
        target = tmp_path / "elsewhere" if extra else scans
        res = run_cli("correct", tmp_path / "pseudo", annotations, target, *extra)
        assert res.code == 3 and "Traceback" not in res.stderr, res.stderr
        assert "input folder" in res.stderr or "among the cases" in res.stderr
        assert digest(scans) == before
    res = run_cli("correct", tmp_path / "pseudo", annotations, tmp_path / "corrected")
    assert res.code == 0, res.stderr


def test_postprocess_recomputes_nothing_from_another_input_folder_silently(tmp_path, run_cli):
    """predB's maps under predA's names were "skipped 2 existing": postprocess.json held only
    the two options. The input folder is now one of the settings its outputs were made with."""
    for name, seed in (("a", 60), ("b", 70)):
        blob_case(tmp_path / name, "c0", seed)
    out = tmp_path / "clean"
    assert run_cli("postprocess", tmp_path / "a" / "labelsTr", out).code == 0
    made_from_a = (out / "c0.nii.gz").read_bytes()
    res = run_cli("postprocess", tmp_path / "b" / "labelsTr", out)
    said = " ".join(res.stderr.split())
    assert res.code == 3 and "other settings: input" in said and "Traceback" not in said
    assert (out / "c0.nii.gz").read_bytes() == made_from_a
    assert run_cli("postprocess", tmp_path / "b" / "labelsTr", out, "--overwrite").code == 0
    assert (out / "c0.nii.gz").read_bytes() != made_from_a
    # a label map the folder held before any flare run is no output of it
    (out / "c1.nii.gz").write_bytes(made_from_a)
    blob_case(tmp_path / "b", "c1", 71)
    res = run_cli("postprocess", tmp_path / "b" / "labelsTr", out, "--overwrite")
    said = " ".join(res.stderr.split())
    assert res.code == 3 and "holds 1 file that flare postprocess did not write there" in said
    assert "(c1.nii.gz; see .flare-written)" in said
