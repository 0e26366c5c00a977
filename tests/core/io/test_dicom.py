"""DICOM CT series in (geometry, HU, refusals), DICOM SEG out (read back voxel for voxel)."""

import json
import math
import re

import numpy as np
import pytest

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import read_volume, write_volume

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")


def write_series(folder, volume, geometry: Geometry, modality="CT", frames=False, skip=None,
                 study=None):
    """A single-frame DICOM series of ``volume`` ([z, y, x] HU) on ``geometry``: stored
    unsigned with a rescale intercept (-1024, or lower for darker voxels), like scanners."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(geometry.direction).reshape(3, 3)
    sx, sy, sz = geometry.spacing_xyz
    series, frame = generate_uid(), generate_uid()
    study = study or generate_uid()
    intercept = min(-1024, int(volume.min()))
    for k in range(volume.shape[0]):
        if skip is not None and k == skip:
            continue
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID = "Phantom^Test", "p1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "1"
        ds.ReferringPhysicianName, ds.StudyID, ds.SeriesNumber = "", "1", 1
        ds.InstanceNumber, ds.Modality, ds.Manufacturer = k + 1, modality, "synthetic"
        ds.ImagePositionPatient = [float(v) for v in
                                   np.asarray(geometry.origin_xyz) + k * sz * d[:, 2]]
        ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing, ds.SliceThickness = [sy, sx], sz
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        if frames:
            ds.NumberOfFrames = 2
        ds.PixelData = (volume[k].astype(np.int32) - intercept).astype("<u2").tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)


def oblique(deg):
    a = math.radians(deg)
    return (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)


def case_volume(seed, shape=(12, 24, 28)):
    rng = np.random.default_rng(seed)
    v = rng.normal(-80, 20, shape).astype(np.int16)
    v[3:9, 6:18, 8:20] = 120
    return v


GEOMETRY = Geometry((12, 24, 28), (0.9, 0.8, 2.5), (-30.0, 12.5, 100.0), oblique(20))


def test_a_series_reads_with_its_geometry_and_hu(tmp_path):
    from flarecli.core.io.dicom import find_series, read_series

    volume = case_volume(0)
    write_series(tmp_path / "patient" / "ct", volume, GEOMETRY)
    series, problems = find_series(tmp_path)
    assert problems == [] and [s.case for s in series] == ["patient_ct"]
    array, g = read_series(series[0].folder, series[0].uid)
    np.testing.assert_array_equal(array, volume)
    assert g.shape_zyx == GEOMETRY.shape_zyx
    np.testing.assert_allclose(g.spacing_xyz, GEOMETRY.spacing_xyz, atol=1e-4)
    np.testing.assert_allclose(g.origin_xyz, GEOMETRY.origin_xyz, atol=1e-4)
    np.testing.assert_allclose(g.direction, GEOMETRY.direction, atol=1e-5)


@pytest.fixture
def model(tiny_model):
    return tiny_model / "model"


def test_infer_on_dicom_series_matches_nifti_and_refuses_odd_series(model, tmp_path, run_cli):
    dcm = tmp_path / "dicom"
    write_series(dcm / "p1" / "ct", case_volume(1), GEOMETRY)
    write_series(dcm / "p2", case_volume(2), GEOMETRY)
    write_series(dcm / "p3" / "mr", case_volume(3), GEOMETRY, modality="MR")
    write_series(dcm / "p4", case_volume(4), GEOMETRY, frames=True)
    write_series(dcm / "p5", case_volume(5), GEOMETRY, skip=6)  # a missing slice
    for i, name in ((1, "p1_ct"), (2, "p2")):
        write_volume(tmp_path / "nifti" / f"{name}_0000.nii.gz", case_volume(i), GEOMETRY)
    common = ("--model", model, "--device", "cpu", "--backend", "torch")
    res = run_cli("infer", dcm, tmp_path / "out", *common)
    assert res.code == 4
    errors = res.stderr
    assert "modality MR" in errors and "multi-frame" in errors and "not equally spaced" in errors
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["p1_ct.nii.gz",
                                                                          "p2.nii.gz"]
    assert run_cli("infer", tmp_path / "nifti", tmp_path / "ref", *common).code == 0
    for name in ("p1_ct", "p2"):
        got, g = read_volume(tmp_path / "out" / f"{name}.nii.gz")
        ref, g_ref = read_volume(tmp_path / "ref" / f"{name}.nii.gz")
        np.testing.assert_array_equal(got, ref)
        assert g.mismatches(g_ref) == []
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    uids = {s["case"]: s["series_uid"] for s in record["scans"]}
    assert uids["p1_ct"] and uids["p2"] and uids["p1_ct"] != uids["p2"]


def test_dicom_seg_reads_back_voxel_for_voxel(model, tmp_path, run_cli):
    dcm = tmp_path / "dicom"
    write_series(dcm / "p1", case_volume(1), GEOMETRY)
    common = ("--model", model, "--device", "cpu", "--backend", "torch",
              "--min-tumor-mm3", "0")
    assert run_cli("infer", dcm, tmp_path / "nii", *common).code == 0
    res = run_cli("infer", dcm, tmp_path / "seg", *common, "--output-format", "dicom-seg")
    assert res.code == 0, res.stderr
    labels, _ = read_volume(tmp_path / "nii" / "p1.nii.gz")
    seg = hd.seg.segread(tmp_path / "seg" / "p1.dcm")
    sources = sorted((pydicom.dcmread(p) for p in (dcm / "p1").glob("*.dcm")),
                     key=lambda ds: ds.InstanceNumber)
    assert seg.SeriesDescription == "flare segmentation"
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == sources[0].SeriesInstanceUID
    from flarecli.core.labels import LABELS

    present = [int(c) for c in np.unique(labels) if c > 0]
    names = {d.SegmentNumber: d.SegmentLabel for d in seg.SegmentSequence}
    assert [names[k] for k in sorted(names)] == [LABELS[c].replace("_", " ") for c in present]
    for d in seg.SegmentSequence:
        code = d.SegmentedPropertyTypeCodeSequence[0]
        assert code.CodingSchemeDesignator == "SCT" and code.CodeValue
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources],
        combine_segments=True, relabel=False)
    remap = np.zeros(len(present) + 1, np.uint8)
    remap[1:] = present
    np.testing.assert_array_equal(remap[pixels], labels)


def test_dicom_seg_needs_dicom_input_and_the_extra(model, tmp_path, run_cli, monkeypatch):
    import sys

    write_volume(tmp_path / "nifti" / "a_0000.nii.gz", case_volume(1), GEOMETRY)
    res = run_cli("infer", tmp_path / "nifti", tmp_path / "out", "--model", model,
                  "--output-format", "dicom-seg")
    assert res.code == 3 and "needs DICOM input" in res.stderr
    monkeypatch.setitem(sys.modules, "highdicom", None)
    res = run_cli("infer", tmp_path / "nifti", tmp_path / "out", "--model", model,
                  "--output-format", "dicom-seg")
    assert res.code == 3 and "flarecli[dicom]" in res.stderr


def liver_series(root):
    """ROOT/dicom/p1 (a CT series) and ROOT/labels/p1.nii.gz (its 120 HU block as liver)."""
    volume = case_volume(1)
    write_series(root / "dicom" / "p1", volume, GEOMETRY)
    labels = np.zeros(volume.shape, np.uint8)
    labels[3:9, 6:18, 8:20] = 1
    write_volume(root / "labels" / "p1.nii.gz", labels, GEOMETRY)
    return root / "dicom"


def test_stats_reads_dicom_images(tmp_path, run_cli):
    dcm = liver_series(tmp_path)
    res = run_cli("stats", tmp_path / "labels", "--images", dcm, "--json", tmp_path / "s.json")
    assert res.code == 0, res.stderr
    case = json.loads((tmp_path / "s.json").read_text())["cases"][0]
    assert case["classes"]["1"]["hu_mean"] == 120


def test_preview_reads_dicom_images(tmp_path, run_cli):
    dcm = liver_series(tmp_path)
    res = run_cli("preview", tmp_path / "labels", dcm, tmp_path / "png")
    assert res.code == 0, res.stderr
    assert (tmp_path / "png" / "p1.png").stat().st_size > 1000


# ---- anonymised series and the DICOM SEG --------------------------------------------------

def edit_series(folder, edit):
    """Apply ``edit(dataset)`` to every file of a series folder (as an anonymiser would)."""
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        edit(ds)
        ds.save_as(p)


def emptied(*attrs, meta=False):
    def edit(ds):
        for a in attrs:
            setattr(ds, a, "")
            if meta:
                setattr(ds.file_meta, "MediaStorage" + a, "")
    return edit


def digests(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def box_labels():
    labels = np.zeros(GEOMETRY.shape_zyx, np.uint8)
    labels[3:9, 6:18, 8:20] = 1
    labels[5:7, 8:12, 10:14] = 14
    return labels


def seg_pixels(path, folder):
    """The SEG at ``path`` as a label map on the grid of the series in ``folder``, its slices
    found by the SOP instance UIDs of their file meta (where anonymisers leave them)."""
    seg = hd.seg.segread(path)
    metas = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    metas.sort(key=lambda ds: ds.InstanceNumber)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.file_meta.MediaStorageSOPInstanceUID for ds in metas],
        combine_segments=True, relabel=False)
    numbers = {d.SegmentNumber: d.SegmentLabel for d in seg.SegmentSequence}
    from flarecli.core.labels import LABELS

    by_name = {v.replace("_", " "): k for k, v in LABELS.items()}
    remap = np.zeros(max(numbers) + 1, np.uint8)
    for number, label in numbers.items():
        remap[number] = by_name[label]
    return seg, remap[pixels]


@pytest.mark.parametrize("attr,how", [("SOPClassUID", "from the file meta"),
                                      ("SOPInstanceUID", "from the file meta"),
                                      ("StudyInstanceUID", "generated"),
                                      ("SeriesInstanceUID", "generated"),
                                      ("FrameOfReferenceUID", "generated")])
def test_a_seg_of_an_anonymised_series_fills_in_what_it_lacks(tmp_path, attr, how):
    from flarecli.core.io.dicom import find_series, write_seg

    folder = tmp_path / "p1"
    write_series(folder, case_volume(1), GEOMETRY)
    edit_series(folder, emptied(attr))
    before = digests(folder)
    (series,), _ = find_series(folder)
    labels = box_labels()
    filled = write_seg(tmp_path / "a.dcm", labels, series.folder, series.uid)
    assert list(filled) == [attr] and filled[attr]["how"] == how
    assert filled[attr]["slices"] == GEOMETRY.shape_zyx[0]
    seg, got = seg_pixels(tmp_path / "a.dcm", folder)
    np.testing.assert_array_equal(got, labels)
    assert digests(folder) == before  # the inputs are never written
    if how == "generated":  # the same on every run, so two outputs of a series agree
        assert write_seg(tmp_path / "b.dcm", labels, series.folder, series.uid) == filled
        if attr == "StudyInstanceUID":
            assert seg.StudyInstanceUID == filled[attr]["value"]
        if attr == "SeriesInstanceUID":
            ref = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
            assert ref == filled[attr]["value"]
    else:
        source = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
        assert getattr(source, attr) == ""  # filled in memory only


def test_a_seg_gets_type2_attributes_an_anonymiser_deleted_as_empty(tmp_path):
    from flarecli.core.io.dicom import find_series, write_seg

    folder = tmp_path / "p1"
    write_series(folder, case_volume(1), GEOMETRY)

    def delete(ds):
        del ds.PatientID, ds.PatientName, ds.StudyDate, ds.SliceThickness

    edit_series(folder, delete)
    (series,), _ = find_series(folder)
    filled = write_seg(tmp_path / "a.dcm", box_labels(), series.folder, series.uid)
    assert sorted(filled) == ["PatientID", "PatientName", "SliceThickness", "StudyDate"]
    assert {v["how"] for v in filled.values()} == {"written empty"}
    seg, got = seg_pixels(tmp_path / "a.dcm", folder)
    assert seg.PatientID == "" and got.max() == 14


@pytest.mark.parametrize("attr", ["SOPClassUID", "SOPInstanceUID"])
def test_no_seg_when_a_slice_has_no_sop_uid_anywhere(tmp_path, attr):
    from flarecli.core.errors import DataError
    from flarecli.core.io.dicom import find_series, write_seg

    folder = tmp_path / "p1"
    write_series(folder, case_volume(1), GEOMETRY)
    (series,), _ = find_series(folder)
    edit_series(folder, emptied(attr, meta=True))
    with pytest.raises(DataError, match=f"no {attr}, neither in the data set nor in the file "
                       f"meta \\(MediaStorage{attr}\\)"):
        write_seg(tmp_path / "a.dcm", box_labels(), series.folder, series.uid)
    assert not (tmp_path / "a.dcm").exists()


def test_what_highdicom_refuses_is_a_data_error_naming_it(tmp_path):
    from flarecli.core.errors import DataError
    from flarecli.core.io.dicom import find_series, write_seg

    folder = tmp_path / "p1"
    write_series(folder, case_volume(1), GEOMETRY)
    edit_series(folder, lambda ds: setattr(ds, "PatientSex", "X"))  # not M, F or O
    (series,), _ = find_series(folder)
    with pytest.raises(DataError, match="highdicom cannot make a DICOM SEG.*ValueError.*'X'"):
        write_seg(tmp_path / "a.dcm", box_labels(), series.folder, series.uid)
    assert list(tmp_path.glob("*.dcm")) == []


def test_infer_writes_the_segs_it_can_and_names_the_case_it_cannot(model, tmp_path, run_cli):
    dcm = tmp_path / "dicom"
    write_series(dcm / "anon", case_volume(1), GEOMETRY)
    edit_series(dcm / "anon", emptied("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                      "SeriesInstanceUID"))
    write_series(dcm / "broken", case_volume(2), GEOMETRY)
    edit_series(dcm / "broken", emptied("SOPInstanceUID", meta=True))
    write_series(dcm / "plain", case_volume(3), GEOMETRY)
    before = {p.name: digests(p) for p in dcm.iterdir()}
    res = run_cli("infer", dcm, tmp_path / "out", "--model", model, "--device", "cpu",
                  "--backend", "torch", "--min-tumor-mm3", "0", "--output-format", "dicom-seg")
    assert res.code == 4, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "broken" in errors[0] and "no SOPInstanceUID" in errors[0]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == ["anon.dcm", "plain.dcm"]
    notes = [line for line in res.stderr.splitlines() if "anon: the series lacks" in line]
    assert len(notes) == 1 and "StudyInstanceUID, SeriesInstanceUID (generated)" in notes[0]
    record = {s["case"]: s for s in json.loads((tmp_path / "out" / "infer.json").read_text())
              ["scans"]}
    assert sorted(record["anon"]["dicom_filled"]) == ["SOPClassUID", "SOPInstanceUID",
                                                      "SeriesInstanceUID", "StudyInstanceUID"]
    assert record["plain"]["dicom_filled"] is None and record["broken"]["error"]
    seg = hd.seg.segread(tmp_path / "out" / "anon.dcm")
    assert seg.StudyInstanceUID == record["anon"]["dicom_filled"]["StudyInstanceUID"]["value"]
    assert {p.name: digests(p) for p in dcm.iterdir()} == before


# ---- the other ways a series goes wrong: each names its file, or reads right ---------------

def one_series(tmp_path, volume=None, edit=None, slices=None):
    """A series in tmp_path/p1 (``case_volume(1)`` unless given), ``edit(ds, k)`` applied
    to slice k for k in ``slices`` (every slice when None); returns (folder, uid)."""
    from flarecli.core.io.dicom import find_series

    folder = tmp_path / "p1"
    write_series(folder, case_volume(1) if volume is None else volume, GEOMETRY)
    if edit is not None:
        for p in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(p)
            k = ds.InstanceNumber - 1
            if slices is None or k in slices:
                edit(ds, k)
                ds.save_as(p)
    series, problems = find_series(folder)
    assert problems == [] and len(series) == 1
    return folder, series[0].uid


def read(folder, uid):
    from flarecli.core.io.dicom import read_series

    return read_series(folder, uid)[0]


def test_a_slice_without_its_position_is_named(tmp_path):
    from flarecli.core.errors import DataError

    folder, uid = one_series(tmp_path, edit=lambda ds, k: delattr(ds, "ImagePositionPatient"),
                             slices={4})
    with pytest.raises(DataError, match="slice_004.dcm has no valid ImagePositionPatient"):
        read(folder, uid)


def test_a_slice_of_another_orientation_is_named(tmp_path):
    from flarecli.core.errors import DataError

    def turn(ds, k):
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]

    folder, uid = one_series(tmp_path, edit=turn, slices={7})
    with pytest.raises(DataError, match="slice_007.dcm is oriented otherwise than"):
        read(folder, uid)


def _tilted(ds, k):
    """Each slice shifted 0.5 mm further along y per 2.5 mm (11.3 degrees): a gantry tilt."""
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 0.2 * k * float(ds.SliceThickness or 2.5), z]


def _no_pixel_spacing(ds, k):
    del ds.PixelSpacing


def _sheared_orientation(ds, k):
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.5, 0.866, 0.0]


@pytest.mark.parametrize("edit, message", [
    (_tilted, r"stacked at [0-9.]+ degrees off their normal \(gantry tilt\)"),
    (_no_pixel_spacing, "slice_000.dcm has no valid PixelSpacing"),
    (_sheared_orientation, "ImageOrientationPatient .* is not two orthogonal unit vectors"),
], ids=["gantry tilt", "no PixelSpacing", "sheared orientation"])
def test_a_series_itk_would_misplace_is_refused(tmp_path, edit, message):
    """ITK reads each of these without a word and puts the voxels elsewhere: a tilt's shear
    dropped, 1 mm pixels assumed, the identity for a sheared orientation."""
    from flarecli.core.errors import DataError

    folder, uid = one_series(tmp_path, edit=edit)
    with pytest.raises(DataError, match=message):
        read(folder, uid)


def test_orientation_vectors_a_little_off_unit_length_are_read(tmp_path):
    """Within the orientation check's 1e-3, a row and column 0.05 % too long stack their
    slices exactly along the normal: not a tilt (the normal was once left unnormalised)."""
    def longer(ds, k):
        ds.ImageOrientationPatient = [1.0005, 0.0, 0.0, 0.0, 1.0005, 0.0]

    folder, uid = one_series(tmp_path, edit=longer)
    assert read(folder, uid).shape == case_volume(1).shape


def test_rescale_slope_missing_is_one(tmp_path):
    volume = case_volume(1)
    folder, uid = one_series(tmp_path, volume, lambda ds, k: delattr(ds, "RescaleSlope"))
    np.testing.assert_array_equal(read(folder, uid), volume)


def test_rescale_intercept_missing_is_zero_for_signed_pixels_that_are_hu(tmp_path):
    volume = case_volume(1)

    def signed_hu(ds, k):  # what some exporters write: HU as signed values, no rescale
        del ds.RescaleIntercept, ds.RescaleSlope
        ds.PixelRepresentation = 1
        ds.PixelData = volume[k].astype("<i2").tobytes()

    folder, uid = one_series(tmp_path, volume, signed_hu)
    np.testing.assert_array_equal(read(folder, uid), volume)


def test_rescale_intercept_missing_on_unsigned_pixels_is_refused(tmp_path):
    from flarecli.core.errors import DataError

    folder, uid = one_series(tmp_path, edit=lambda ds, k: delattr(ds, "RescaleIntercept"))
    with pytest.raises(DataError, match="no RescaleIntercept, and the pixel values are "
                                        "unsigned: they cannot be HU"):
        read(folder, uid)


@pytest.mark.parametrize("k", [0, 5])  # the first slice sets ITK's pixel type: both ways
def test_rescale_missing_on_one_slice_is_named(tmp_path, k):
    from flarecli.core.errors import DataError

    folder, uid = one_series(tmp_path, edit=lambda ds, k: delattr(ds, "RescaleIntercept"),
                             slices={k})
    with pytest.raises(DataError, match=f"slice_00{k}.dcm has no RescaleIntercept while "
                                        "other slices have one"):
        read(folder, uid)


def test_slices_with_their_own_rescale_read_each_with_its_own(tmp_path):
    volume = case_volume(1)
    folder, uid = one_series(tmp_path, volume, lambda ds, k: setattr(ds, "RescaleSlope", 0.5),
                             slices={2})
    expected = volume.astype(np.float64)
    intercept = min(-1024, int(volume.min()))
    expected[2] = (volume[2] - intercept) * 0.5 + intercept  # odd stored values: .5 HU
    got = read(folder, uid)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def rle(ds, k):
    from pydicom.uid import RLELossless

    ds.compress(RLELossless)


def jpeg_ls(ds, k):
    pytest.importorskip("jpeg_ls")
    from pydicom.uid import JPEGLSLossless

    ds.compress(JPEGLSLossless)


def jpeg_2000(ds, k):
    """Lossless JPEG 2000 by Pillow's OpenJPEG (pydicom's own encoder needs a plugin)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array.astype(np.uint16)).save(buf, format="JPEG2000",
                                                           no_jp2=True, irreversible=False)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless


@pytest.mark.parametrize("compress", [rle, jpeg_ls, jpeg_2000], ids=["RLE", "JPEG-LS", "J2K"])
def test_compressed_series_read_voxel_for_voxel(tmp_path, compress):
    volume = case_volume(1)
    folder, uid = one_series(tmp_path, volume, compress)
    np.testing.assert_array_equal(read(folder, uid), volume)


def claiming(syntax):
    """An edit that stores a slice's pixels as a (meaningless) fragment under the transfer
    syntax ``syntax``; pydicom 3.0 writes no JPEG XL, so the UID is put in by bytes."""
    from pydicom.encaps import encapsulate

    stand_in = "1.2.840.10008.1.2.4.201"  # HTJ2K Lossless: as long as the JPEG XL UIDs

    def edit(ds, k):
        ds.PixelData = encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = stand_in
    return edit, stand_in, syntax


def write_claiming(folder, syntax):
    edit, stand_in, _ = claiming(syntax)
    write_series(folder, case_volume(1), GEOMETRY)
    edit_series(folder, lambda ds: edit(ds, 0))
    for p in folder.glob("*.dcm"):
        data = p.read_bytes()
        assert len(stand_in) == len(syntax) and data.count(stand_in.encode()) == 1
        p.write_bytes(data.replace(stand_in.encode(), syntax.encode()))


def test_a_transfer_syntax_gdcm_does_not_read_is_named(tmp_path):
    from flarecli.core.io.cases import discover_scans

    write_claiming(tmp_path / "xl", "1.2.840.10008.1.2.4.110")
    found = discover_scans(tmp_path)
    (case,) = found.cases
    assert case.image is None and len(case.problems) == 1
    assert re.search(r"12 DICOM files \(slice_000.dcm, \.\.\.\) with pixel data in JPEG XL "
                     r"Lossless \(1\.2\.840\.10008\.1\.2\.4\.110\), which SimpleITK's GDCM",
                     case.problems[0])
    assert "no package adds codecs to it" in case.problems[0]


def test_pixel_data_gdcm_cannot_decode_names_the_file_and_syntax(tmp_path):
    import SimpleITK as sitk

    from flarecli.core.errors import DataError
    from flarecli.core.io.dicom import find_series

    edit, _, _ = claiming("1.2.840.10008.1.2.4.201")
    folder = tmp_path / "p1"
    write_series(folder, case_volume(1), GEOMETRY)
    edit_series(folder, lambda ds: edit(ds, 0))
    why = (r"slice_000.dcm: pixel data in HTJ2K Lossless \(1\.2\.840\.10008\.1\.2\.4\.201\) "
           r"that SimpleITK's GDCM, flare's DICOM reader, could not decode")
    series, problems = find_series(folder)  # found when the folder is searched ...
    (uid,) = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    assert series == [] and [p for p, _ in problems] == [folder]
    assert re.match(f"series {re.escape(uid)}: {why}", problems[0][1]), problems
    with pytest.raises(DataError, match=why):  # ... and when the series is read
        read(folder, uid)


def test_a_truncated_slice_is_named(tmp_path):
    from flarecli.core.errors import DataError
    from flarecli.core.io.cases import discover_scans

    folder, uid = one_series(tmp_path)
    cut = folder / "slice_005.dcm"
    cut.write_bytes(cut.read_bytes()[:-200])  # the end of its pixel data is gone
    (case,) = discover_scans(tmp_path).cases
    with pytest.raises(DataError, match="not equally spaced .* Not read in this folder: "
                                        "slice_005.dcm"):
        read(case.image, case.series_uid)
    assert [(p.name, "damaged" in why) for p, why in discover_scans(tmp_path).stray] == \
        [("slice_005.dcm", True)]


def test_a_slice_of_another_size_is_named(tmp_path):
    from flarecli.core.errors import DataError

    def smaller(ds, k):
        ds.Rows, ds.Columns = 20, 28
        ds.PixelData = ds.PixelData[: 20 * 28 * 2]

    folder, uid = one_series(tmp_path, edit=smaller, slices={3})
    with pytest.raises(DataError, match="slice_003.dcm is 28x20 pixels, the other slices "
                                        "28x24: not one volume"):
        read(folder, uid)


def add_image(folder, kind, same_series):
    """A coronal localizer or a secondary capture screenshot beside the series in folder,
    in the series itself (``same_series``) or in a series of its own."""
    from pydicom.uid import SecondaryCaptureImageStorage

    src = pydicom.dcmread(folder / "slice_000.dcm")
    g = Geometry((1, 30, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 0, -1, 0, 1, 0))
    write_series(folder / "tmp", case_volume(9, (1, 30, 40)), g)
    ds = pydicom.dcmread(folder / "tmp" / "slice_000.dcm")
    (folder / "tmp" / "slice_000.dcm").unlink()
    (folder / "tmp").rmdir()
    if kind == "localizer":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    else:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.StudyInstanceUID = src.StudyInstanceUID
    if same_series:
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (src.SeriesInstanceUID,
                                                        src.FrameOfReferenceUID)
    ds.save_as(folder / f"{kind}.dcm")


@pytest.mark.parametrize("kind", ["localizer", "secondary"])
@pytest.mark.parametrize("same_series", [False, True], ids=["own series", "same series"])
def test_localizer_and_secondary_capture_are_left_out(tmp_path, kind, same_series):
    from flarecli.core.io.cases import discover_scans
    from flarecli.core.io.dicom import write_seg

    volume = case_volume(1)
    folder, _ = one_series(tmp_path, volume)
    add_image(folder, kind, same_series)
    found = discover_scans(tmp_path)
    (case,) = found.cases
    assert case.id == "p1" and not case.problems
    np.testing.assert_array_equal(read(case.image, case.series_uid), volume)
    notes = [(p.name, why) for p, why in found.stray]
    if same_series:  # found only when the series is read
        assert notes == []
    else:
        (note,) = notes
        assert note[0] == f"{kind}.dcm" and note[1].endswith("not segmented")
        assert ("LOCALIZER" if kind == "localizer" else "secondary capture") in note[1]
    write_seg(tmp_path / "a.dcm", box_labels(), case.image, case.series_uid)
    seg = hd.seg.segread(tmp_path / "a.dcm")
    referenced = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for r in s.ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(p).SOPInstanceUID
                          for p in folder.glob("slice_*.dcm")}


def test_a_series_folder_itself_is_read_without_notes_for_its_slices(tmp_path):
    from flarecli.core.io.cases import discover_scans

    folder, _ = one_series(tmp_path)
    (folder / "README.txt").write_text("CT of p1\n")
    (folder / "DICOMDIR").write_bytes(b"")  # an empty one: not DICOM, yet named like it
    found = discover_scans(folder)
    assert [c.id for c in found.cases] == ["p1"]
    assert [(p.name, why) for p, why in found.stray] == [
        ("DICOMDIR", "neither NIfTI nor DICOM, ignored"),
        ("README.txt", "neither NIfTI nor DICOM, ignored")]
    # the same folder read from above: its README is still a note, and only once
    found = discover_scans(tmp_path)
    assert [(p.name, why) for p, why in found.stray if p.parent == folder] == [
        ("DICOMDIR", "neither NIfTI nor DICOM, ignored"),
        ("README.txt", "neither NIfTI nor DICOM, ignored")]


def test_a_dicom_seg_in_the_series_folder_is_left_out_and_the_case_keeps_its_id(tmp_path):
    """A SEG beside its CT (flare infer --output-format dicom-seg written into the series'
    folder, or a PACS export) was listed as a second series: the CT became case 'p1_2', so
    outputs already written as p1 were orphaned, and the SEG was read as a CT of its own."""
    from flarecli.core.io.cases import discover_scans
    from flarecli.core.io.dicom import write_seg

    volume = case_volume(1)
    folder, uid = one_series(tmp_path, volume)
    write_seg(folder / "seg.dcm", box_labels(), folder, uid)
    found = discover_scans(tmp_path)
    (case,) = found.cases
    assert case.id == "p1" and case.series_uid == uid and not case.problems
    np.testing.assert_array_equal(read(case.image, case.series_uid), volume)
    assert [(p.name, why) for p, why in found.stray] == [
        ("seg.dcm", "a segmentation (DICOM SEG), not segmented")]
