"""DICOM CT series in, DICOM SEG out.

In: a folder of series -- one series per sub-folder, or folders of folders -- wherever a
NIfTI folder is taken. Each directory's series are found by GDCM (through SimpleITK), which
sorts the slices by position and applies the rescale slope and intercept (HU). A series is
refused, on its own line, when it is not CT, is a multi-frame object, or its slices are not
equally spaced along their normal (a gap or a duplicate slice would give a wrong grid). The
case id is the series' folder relative to the input (``/`` -> ``_``), with ``_<series
number>`` added when a folder holds several series; the run record names each series' UID.

Out: a DICOM SEG (binary, one segment per class present) per case, made with highdicom,
referencing the source series, with SNOMED CT codes for the organs (laterality in the label
and as a modifier) and the tumor (neoplasm). ``pydicom`` and ``highdicom`` are the optional
``dicom`` extra; without them, DICOM SEG output is exit code 3 with the install command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import DataError, InputError

INSTALL = "pip install 'flarecli[dicom]'"


@dataclass(frozen=True)
class Series:
    case: str
    folder: Path
    uid: str
    files: tuple[str, ...]


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_series(root: Path) -> tuple[list[Series], list[tuple[Path, str]]]:
    """The CT series under ``root`` and (folder, problem) for folders GDCM cannot read."""
    import SimpleITK as sitk

    root = Path(root)
    found: list[Series] = []
    problems: list[tuple[Path, str]] = []
    folders = sorted({p.parent for p in root.rglob("*") if p.is_file() and _is_dicom(p)})
    for folder in folders:
        try:
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as e:
            problems.append((folder, f"cannot list DICOM series ({str(e).strip()[:120]})"))
            continue
        rel = folder.relative_to(root).as_posix() if folder != root else root.name
        base = re.sub(r"[^A-Za-z0-9.-]+", "_", rel).strip("_") or "series"
        for k, uid in enumerate(sorted(uids)):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            case = base if len(uids) == 1 else f"{base}_{k + 1}"
            found.append(Series(case, folder, uid, tuple(files)))
    return found, problems


def _tag(reader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def read_series(folder: Path | str, uid: str) -> tuple[np.ndarray, Any]:
    """``(array[z, y, x] in HU, Geometry)`` of one CT series; DataError for anything that is
    not a single-frame CT series on a regular grid."""
    import SimpleITK as sitk

    from flarecli.core.io.nifti import from_sitk

    where = f"{folder} (series {uid})"
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if not files:
        raise DataError(f"{where}: no DICOM files in the series")
    head = sitk.ImageFileReader()
    head.SetFileName(files[0])
    try:
        head.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(f"{where}: unreadable DICOM ({str(e).strip()[:120]})") from None
    modality = _tag(head, "0008|0060")
    if modality != "CT":
        raise DataError(f"{where}: modality {modality or 'missing'}, flare segments CT only")
    frames = _tag(head, "0028|0008")
    if frames and frames.isdigit() and int(frames) > 1:
        raise DataError(f"{where}: a multi-frame object ({frames} frames); export the series "
                        "as single-frame slices")
    if len(files) < 2:
        raise DataError(f"{where}: a single slice, expected a 3-D series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{where}: cannot read the series ({str(e).strip()[:120]})") from None
    _check_spacing(reader, len(files), where)
    return from_sitk(image, where)


def _check_spacing(reader, n: int, where: str) -> None:
    """The slices must be equally spaced along their normal (no gap, no duplicate)."""
    positions = []
    orientation = None
    for i in range(n):
        ipp = reader.GetMetaData(i, "0020|0032") if reader.HasMetaDataKey(i, "0020|0032") \
            else ""
        iop = reader.GetMetaData(i, "0020|0037") if reader.HasMetaDataKey(i, "0020|0037") \
            else ""
        try:
            pos = np.array([float(v) for v in ipp.split("\\")])
            if orientation is None:
                o = np.array([float(v) for v in iop.split("\\")])
                orientation = np.cross(o[:3], o[3:])
        except ValueError:
            raise DataError(f"{where}: slice {i + 1} has no valid position or orientation") \
                from None
        positions.append(float(pos @ orientation))
    steps = np.diff(positions)
    if len(steps) and (np.abs(steps).min() < 1e-3 or
                       np.abs(steps).max() - np.abs(steps).min() > 0.01 * np.abs(steps).mean()
                       + 1e-3):
        raise DataError(f"{where}: slices are not equally spaced (steps {np.abs(steps).min():.3f}"
                        f"-{np.abs(steps).max():.3f} mm): a missing or duplicate slice?")


# ---------------------------------------------------------------------------------------------
# DICOM SEG
# ---------------------------------------------------------------------------------------------

def _require():
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise InputError("DICOM SEG output needs pydicom and highdicom", hint=INSTALL) from None
    return pydicom, highdicom


def check_seg_available() -> None:
    _require()


def _segment_codes(c: int):
    """(property category, property type, laterality or None) of a FLARE class."""
    from pydicom.sr.codedict import codes

    organs = {1: "Liver", 2: "Kidney", 3: "Spleen", 4: "Pancreas", 5: "Aorta",
              6: "InferiorVenaCava", 7: "AdrenalGland", 8: "AdrenalGland", 9: "Gallbladder",
              10: "Esophagus", 11: "Stomach", 12: "Duodenum", 13: "Kidney"}
    side = {2: codes.SCT.Right, 7: codes.SCT.Right, 8: codes.SCT.Left, 13: codes.SCT.Left}
    if c == 14:
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm, None
    return codes.SCT.Organ, getattr(codes.SCT, organs[c]), side.get(c)


#: Patient and study attributes highdicom copies from the source into the SEG. They may be
#: empty (Type 2) but must be there; anonymisers that delete them instead of emptying them
#: would otherwise make highdicom fail, so the SEG gets them empty.
SEG_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
             "StudyTime", "AccessionNumber", "StudyID", "SliceThickness")


def _text(ds, attr: str) -> str:
    value = ds.get(attr)
    return "" if value is None else str(value).strip()


def seg_sources(folder: Path | str, uid: str) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The series' slices as a DICOM SEG references them (pydicom datasets without pixel
    data, in the series' order) and what was filled in for that, by attribute: ``{"how":
    "from the file meta" | "from the other slices" | "generated" | "written empty",
    "slices": n}``, plus the ``source`` attribute or the ``value`` given. Only the
    in-memory datasets change, never the files.

    Anonymisers often empty the UIDs a SEG needs. A missing SOPClassUID or SOPInstanceUID is
    taken from the file meta (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID); a missing
    StudyInstanceUID, SeriesInstanceUID or FrameOfReferenceUID is the one the other slices
    carry, or else generated, the same for every slice and on every run (derived from the
    slices' SOP instance UIDs); absent Type 2 attributes (:data:`SEG_TYPE2`) are added empty.
    Raises DataError naming the slice when it cannot be referenced: no SOP class or instance
    UID anywhere, two slices with one SOP instance UID, or a file pydicom cannot read.
    """
    import SimpleITK as sitk

    _require()
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import generate_uid

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    sources = []
    for f in files:
        try:
            sources.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (InvalidDicomError, EOFError, ValueError) as e:
            raise DataError(f"{f}: pydicom cannot read it ({e})") from None
        except OSError as e:
            raise DataError(f"{f}: cannot be read ({e.strerror or e})") from None
    filled: dict[str, dict[str, Any]] = {}
    for attr, meta_attr in (("SOPClassUID", "MediaStorageSOPClassUID"),
                            ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        n = 0
        for f, ds in zip(files, sources, strict=True):
            if _text(ds, attr):
                continue
            meta = getattr(ds, "file_meta", None)
            value = _text(meta, meta_attr) if meta is not None else ""
            if not value:
                raise DataError(f"{f}: no {attr}, neither in the data set nor in the file meta "
                                f"({meta_attr}): a DICOM SEG cannot reference the slice")
            setattr(ds, attr, value)
            n += 1
        if n:
            filled[attr] = {"how": "from the file meta", "source": meta_attr, "slices": n}
    first: dict[str, str] = {}
    for f, ds in zip(files, sources, strict=True):
        other = first.setdefault(_text(ds, "SOPInstanceUID"), f)
        if other != f:
            raise DataError(f"{f}: the same SOPInstanceUID as {Path(other).name}: a DICOM SEG "
                            "cannot tell the two slices apart")
    instances = sorted(first)
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        missing = [ds for ds in sources if not _text(ds, attr)]
        if not missing:
            continue
        values = {_text(ds, attr) for ds in sources} - {""}
        if len(values) == 1:
            how, value = "from the other slices", values.pop()
        else:  # the same on every run, so two runs (or two outputs) of a series agree
            how, value = "generated", generate_uid(entropy_srcs=["flare", attr, *instances])
        for ds in missing:
            setattr(ds, attr, value)
        filled[attr] = {"how": how, "slices": len(missing), "value": value}
    for attr in SEG_TYPE2:
        missing = [ds for ds in sources if attr not in ds]
        for ds in missing:
            setattr(ds, attr, "")
        if missing:
            filled[attr] = {"how": "written empty", "slices": len(missing)}
    return sources, filled


def seg_fill_ins(folder: Path | str, uid: str) -> dict[str, dict[str, Any]]:
    """What :func:`write_seg` fills in for this series (see :func:`seg_sources`); {} when
    nothing. Reads the slices' headers; raises DataError when no SEG can be written."""
    return seg_sources(folder, uid)[1]


def write_seg(target: Path, labels: np.ndarray, folder: Path | str, uid: str
              ) -> dict[str, dict[str, Any]]:
    """A DICOM SEG of ``labels`` (the series' grid, [z, y, x]) referencing its series.
    Returns what was filled in for the series (:func:`seg_sources`). Raises DataError for a
    series no SEG can reference, an empty label map, and anything highdicom or pydicom
    refuses while building or saving the SEG (naming it)."""
    import struct

    from flarecli import __version__
    from flarecli.core.io.nifti import atomic_path
    from flarecli.core.labels import LABELS

    pydicom, hd = _require()
    sources, filled = seg_sources(folder, uid)
    if len(sources) != labels.shape[0]:
        raise DataError(f"{folder}: series has {len(sources)} slices, labels {labels.shape[0]}")
    present = [int(c) for c in np.unique(labels) if c > 0]
    if not present:  # highdicom needs a segment: an empty label map gets none, say so
        raise DataError(f"{folder}: no structure found, no DICOM SEG written")
    descriptions = []
    for number, c in enumerate(present, start=1):
        category, kind, side = _segment_codes(c)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=LABELS[c].replace("_", " "),
            segmented_property_category=category, segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="flare", version=__version__, family=pydicom.sr.codedict.codes.cid7162
                .ArtificialIntelligence),
            anatomic_regions=None,
            primary_anatomic_structures=[kind] if side is None else None))
        if side is not None:
            descriptions[-1].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(side.value, side.scheme_designator, side.meaning)]
    remap = np.zeros(256, np.uint8)
    for number, c in enumerate(present, start=1):
        remap[c] = number
    # what highdicom raises for source attributes it cannot use (a missing one, a value it
    # cannot parse or map): the case's error, naming the cause, instead of a traceback
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=remap[labels],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="flare", manufacturer_model_name="flare", software_versions=__version__,
            device_serial_number="0", series_description="flare segmentation")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{folder}: highdicom cannot make a DICOM SEG of this series "
                        f"({type(e).__name__}: {e})") from None
    with atomic_path(Path(target)) as tmp:
        try:
            seg.save_as(tmp)
        except (TypeError, ValueError, OverflowError, struct.error) as e:  # a value pydicom
            raise DataError(f"{target}: pydicom cannot write the DICOM SEG "  # cannot encode
                            f"({type(e).__name__}: {e})") from None
    return filled
