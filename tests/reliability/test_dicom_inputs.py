"""DICOM input as it comes from scanners, PACS exports and anonymisers, through ``flare
infer``: each odd series is one line naming the case and the file or field at fault (exit
code 4) while the others are segmented, a folder without any scan is an input error (exit
code 3), inputs are never written, and no traceback reaches the user."""

from __future__ import annotations

import re
import subprocess
import sys

import pydicom
import pytest

from flarecli.core.io.nifti import read_volume, write_volume
from tests.core.io.test_dicom import (
    GEOMETRY,
    add_image,
    case_volume,
    claiming,
    edit_series,
    write_claiming,
    write_series,
)
from tests.reliability.test_bad_inputs import digest

pytest.importorskip("highdicom")


@pytest.fixture
def model(tiny_model):
    return tiny_model / "model"


def common(model):
    return ("--model", model, "--device", "cpu", "--backend", "torch", "--min-tumor-mm3", "0")


def edit_slice(folder, k, edit):
    path = folder / f"slice_{k:03d}.dcm"
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)


#: case -> what its one error line says
BAD = {
    "no_position": "slice_004.dcm has no valid ImagePositionPatient",
    "cut_short": "Not read in this folder: slice_005.dcm",
    "no_intercept": "no RescaleIntercept, and the pixel values are unsigned",
    "half_rescaled": "slice_002.dcm has no RescaleIntercept while other slices have one",
    "jpeg_xl": r"with pixel data in JPEG XL Lossless \(1\.2\.840\.10008\.1\.2\.4\.110\)",
}


def dicom_folder(root):
    """ROOT/dicom: two series flare segments (one beside its localizer and with a screenshot
    inside it) and one series per way of going wrong (BAD)."""
    dcm = root / "dicom"
    write_series(dcm / "good", case_volume(1), GEOMETRY)
    write_series(dcm / "with_scout", case_volume(2), GEOMETRY)
    add_image(dcm / "with_scout", "localizer", same_series=False)
    add_image(dcm / "with_scout", "secondary", same_series=True)
    for name in ("no_position", "cut_short", "no_intercept", "half_rescaled"):
        write_series(dcm / name, case_volume(3), GEOMETRY)
    edit_slice(dcm / "no_position", 4, lambda ds: delattr(ds, "ImagePositionPatient"))
    cut = dcm / "cut_short" / "slice_005.dcm"
    cut.write_bytes(cut.read_bytes()[:-200])
    edit_series(dcm / "no_intercept", lambda ds: delattr(ds, "RescaleIntercept"))
    edit_slice(dcm / "half_rescaled", 2, lambda ds: delattr(ds, "RescaleIntercept"))
    write_claiming(dcm / "jpeg_xl", "1.2.840.10008.1.2.4.110")
    return dcm


@pytest.mark.parametrize("output_format", ["nifti", "dicom-seg"])
def test_each_odd_series_is_one_line_and_the_others_are_segmented(model, tmp_path, run_cli,
                                                                  output_format):
    dcm = dicom_folder(tmp_path)
    before = digest(dcm)
    res = run_cli("infer", dcm, tmp_path / "out", *common(model),
                  "--output-format", output_format)
    assert res.code == 4, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BAD), res.stderr
    for case, message in BAD.items():
        (line,) = [e for e in errors if e.startswith(f"error: {case}:")]
        assert re.search(message, line), line
    suffix = ".nii.gz" if output_format == "nifti" else ".dcm"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(suffix)) \
        == [f"good{suffix}", f"with_scout{suffix}"]
    assert "localizer.dcm: a localizer (ImageType LOCALIZER), not segmented" in res.stderr
    assert digest(dcm) == before


def test_the_scan_beside_a_localizer_is_the_same_scan(model, tmp_path, run_cli):
    """A localizer and a screenshot in the series' folder change nothing in its labels."""
    write_series(tmp_path / "plain" / "p1", case_volume(2), GEOMETRY)
    write_series(tmp_path / "mixed" / "p1", case_volume(2), GEOMETRY)
    add_image(tmp_path / "mixed" / "p1", "localizer", same_series=True)
    add_image(tmp_path / "mixed" / "p1", "secondary", same_series=False)
    for name in ("plain", "mixed"):
        assert run_cli("infer", tmp_path / name, tmp_path / f"out-{name}", *common(model)) \
            .code == 0
    plain, g_plain = read_volume(tmp_path / "out-plain" / "p1.nii.gz")
    mixed, g_mixed = read_volume(tmp_path / "out-mixed" / "p1.nii.gz")
    assert (plain == mixed).all() and g_plain.mismatches(g_mixed) == []


@pytest.mark.parametrize("output_format", ["nifti", "dicom-seg"])
def test_a_folder_without_scans_is_an_input_error(model, tmp_path, run_cli, output_format):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "a.dcm").write_text("not DICOM\n")
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", *common(model),
                  "--output-format", output_format)
    assert res.code == 3, res.stderr
    assert "no scans found" in res.stderr
    assert "sub/a.dcm: not a DICOM file: no DICM header" in res.stderr  # the hint says why
    assert not (tmp_path / "out" / "infer.json").exists()
    (tmp_path / "empty").mkdir()
    assert run_cli("infer", tmp_path / "empty", tmp_path / "out", *common(model)).code == 3


def test_dicom_seg_of_nifti_scans_is_refused_before_any_work(model, tmp_path, run_cli):
    write_volume(tmp_path / "nifti" / "a_0000.nii.gz", case_volume(1), GEOMETRY)
    res = run_cli("infer", tmp_path / "nifti", tmp_path / "out", *common(model),
                  "--output-format", "dicom-seg")
    assert res.code == 3 and "needs DICOM input series" in res.stderr
    assert "loaded" not in res.stderr  # the model was never loaded
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_series_folder_itself_is_segmented_without_notes(model, tmp_path, run_cli):
    series = tmp_path / "dicom" / "p1"
    write_series(series, case_volume(1), GEOMETRY)
    res = run_cli("infer", series, tmp_path / "direct", *common(model))
    assert res.code == 0, res.stderr
    assert "note" not in res.stderr and "NIfTI" not in res.stderr
    assert run_cli("infer", tmp_path / "dicom", tmp_path / "above", *common(model)).code == 0
    direct, _ = read_volume(tmp_path / "direct" / "p1.nii.gz")
    above, _ = read_volume(tmp_path / "above" / "p1.nii.gz")
    assert (direct == above).all()


def test_folders_that_would_share_a_case_id_are_refused_not_overwritten(model, tmp_path,
                                                                         run_cli):
    """``patient 1`` and ``patient_1`` would both be case ``patient_1`` (one output file):
    each is one error line naming the other, neither is segmented, and folders named in
    another script keep their names instead of all becoming ``series``."""
    dcm = tmp_path / "dicom"
    for k, name in enumerate(["patient 1", "patient_1", "患者", "病人"]):
        write_series(dcm / name, case_volume(k + 1), GEOMETRY)
    before = digest(dcm)
    res = run_cli("infer", dcm, tmp_path / "out", *common(model))
    assert res.code == 4, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, res.stderr
    assert any("dicom/patient 1: " in e and "as 'patient_1' would" in e for e in errors)
    assert any("dicom/patient_1: " in e and "as 'patient 1' would" in e for e in errors)
    assert "2 of 4 scans had problems" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == \
        ["患者.nii.gz", "病人.nii.gz"]
    assert digest(dcm) == before


def test_a_damaged_compressed_series_is_one_line_not_a_decoder_per_slice(model, tmp_path):
    """GDCM's JPEG 2000 decoder prints a line of its own for every slice it cannot parse,
    when the series is listed and again when it is read: flare's line must not drown."""
    dcm = tmp_path / "dicom"
    write_series(dcm / "good", case_volume(1), GEOMETRY)
    write_series(dcm / "htj2k", case_volume(2), GEOMETRY)
    edit, _, _ = claiming("1.2.840.10008.1.2.4.201")  # garbage where the codestream goes
    edit_series(dcm / "htj2k", lambda ds: edit(ds, 0))
    (tmp_path / "labels").mkdir()
    for name in ("good", "htj2k"):
        write_volume(tmp_path / "labels" / f"{name}.nii.gz",
                     (case_volume(1) > 0).astype("uint8"), GEOMETRY)
    for args in (("infer", dcm, tmp_path / "out", *common(model)),
                 ("stats", tmp_path / "labels", "--images", dcm)):
        # a process of its own: the decoder writes to file descriptor 2, not to sys.stderr
        res = subprocess.run([sys.executable, "-m", "flarecli", *map(str, args)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 4, res.stderr
        lines = res.stderr.splitlines()
        assert "SOC marker" not in res.stderr, res.stderr  # the decoder's own lines
        assert len([ln for ln in lines if ln.startswith("error: htj2k:")]) == 1, res.stderr
        assert len(lines) <= 4, res.stderr
    assert (tmp_path / "out" / "good.nii.gz").is_file()


# ---- what a newcomer reads first: --help -------------------------------------------------

def rendered(res) -> str:
    """--help's text with the box drawing and the terminal's line breaks taken out."""
    return " ".join(" ".join(line.strip(" │") for line in res.stdout.splitlines()).split())


def all_commands():
    from flarecli.cli import app
    from flarecli.commands import recipes

    return ([[]] + [[c.name] for c in app.registered_commands] + [["recipes"]]
            + [["recipes", c.name or c.callback.__name__] for c in recipes.app.registered_commands])


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: " ".join(c) or "flare")
def test_flags_show_no_type_placeholder(command, run_cli):
    res = run_cli(*command, "--help")
    assert res.code == 0
    assert "<bool>" not in res.stdout  # a flag takes no value


def test_help_says_where_dicom_goes_in(run_cli):
    text = rendered(run_cli("--help"))
    assert "infer, pseudolabel, stats and preview also read DICOM CT series" in text
    infer = rendered(run_cli("infer", "--help"))
    assert "<case>_0000.nii.gz files, or DICOM CT series" in infer
    assert "Model folder or .zip" in infer
    assert "--tta Average" in infer and "<path>" in infer  # options with values keep theirs
    for command in ("pseudolabel", "preview", "stats"):
        assert "DICOM CT series" in rendered(run_cli(command, "--help")), command
