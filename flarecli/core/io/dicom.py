"""DICOM CT series in, DICOM SEG out.

In: a folder of series -- a series folder, one series per sub-folder, or folders of folders
-- wherever a NIfTI folder is taken. Each directory's series are found by GDCM (through
SimpleITK), which sorts the slices by position and applies the rescale slope and intercept
(HU). Localizers and secondary capture images are left out. A series is refused, on its own
line naming the file at fault, when it is not CT, is a multi-frame object, has a slice
without position, of another orientation or size, or that GDCM cannot decode, when its
slices are not equally spaced along their normal (a gap or a duplicate slice would give a
wrong grid), or when its rescale tags would give wrong HU (:func:`read_series`). The case id
is the series' folder relative to the input (``/`` -> ``_``), with ``_<series number>``
added when a folder holds several series; the run record names each series' UID.

Out: a DICOM SEG (binary, one segment per class present) per case, made with highdicom,
referencing the source series (anonymised ones too: :func:`seg_sources`), with SNOMED CT
codes for the organs (laterality in the label and as a modifier) and the tumor (neoplasm).
``pydicom`` and ``highdicom`` are the optional ``dicom`` extra; without them, DICOM SEG
output is exit code 3 with the install command.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import DataError, InputError
from flarecli.core.io.nifti_header import REPORT_SUFFIXES, nifti_suffix

INSTALL = "pip install 'flarecli[dicom]'"

#: Transfer syntaxes whose pixel data is not compressed.
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                             "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})
#: Compressed transfer syntaxes SimpleITK's GDCM decodes: JPEG, JPEG-LS, JPEG 2000 and RLE
#: (the tests read RLE, JPEG-LS and JPEG 2000 series back voxel for voxel). For any other
#: no package helps: flare reads DICOM through SimpleITK, whose GDCM has its codecs built in.
GDCM_DECODES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                          "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                          "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
                          "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                          "1.2.840.10008.1.2.5"})
_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline", "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless", "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless", "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.92": "JPEG 2000 Part 2 Lossless",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL", "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL", "1.2.840.10008.1.2.4.203": "HTJ2K",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
#: Secondary capture SOP classes: screenshots, scanned documents, dose pages -- no CT slice.
SECONDARY_CAPTURE = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
                               "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
                               "1.2.840.10008.5.1.4.1.1.7.4"})
#: Modalities of objects that share a CT's folder (and often its study) but are no slice of
#: it: a segmentation (flare infer's own output, say), RT objects, reports, presentation states.
NOT_CT_SLICES = {"SEG": "a segmentation (DICOM SEG)", "RTSTRUCT": "an RT structure set",
                 "RTDOSE": "an RT dose grid", "RTPLAN": "an RT plan",
                 "RTRECORD": "an RT treatment record", "PR": "a presentation state",
                 "SR": "a structured report", "KO": "a key object selection",
                 "REG": "a registration", "DOC": "a document"}
_SEG_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
                              "1.2.840.10008.5.1.4.1.1.66.7"})  # Label Map Segmentation
_DICOMDIR = "1.2.840.10008.1.3.10"  # the index of a DICOM file set (a CD), not an image
#: Value representations with a 4-byte length in explicit VR encoding.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})


@dataclass(frozen=True)
class Series:
    case: str
    folder: Path
    uid: str
    files: tuple[str, ...]


@dataclass
class Found:
    """What :func:`scan_dicom` found under a folder."""

    series: list[Series]
    #: (folder, problem): folders whose DICOM files give no series flare can read
    problems: list[tuple[Path, str]]
    #: (file, why): files left out, for notes -- a localizer, a report, a damaged file
    ignored: list[tuple[Path, str]]
    #: every file with a DICOM header that was looked at
    dicom: frozenset[Path]


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def file_meta(path: Path | str) -> dict[str, str]:
    """The UIDs of a DICOM file's meta header: ``sop_class``, ``sop_instance`` and
    ``transfer_syntax`` (those present); {} when there is no readable one. The meta header
    (group 0002, after the 128-byte preamble and ``DICM``) is always explicit VR little
    endian, so it is read here without pydicom, which is optional."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read(132 + 16384)
    except OSError:
        return {}
    if data[128:132] != b"DICM":
        return {}
    names = {0x0002: "sop_class", 0x0003: "sop_instance", 0x0010: "transfer_syntax"}
    found: dict[str, str] = {}
    pos = 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        if data[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        if element in names and start + length <= len(data):
            found[names[element]] = data[start:start + length].decode("ascii", "replace") \
                .strip("\0 ")
        pos = start + length
    return found


def syntax_name(uid: str) -> str:
    """``JPEG XL Lossless (1.2.840.10008.1.2.4.110)``; the bare UID when unknown."""
    name = _SYNTAX_NAMES.get(uid)
    return f"{name} ({uid})" if name else f"transfer syntax {uid}"


def _undecodable(uid: str, known: bool = False) -> str:
    """Why pixel data in transfer syntax ``uid`` was not read; ``known``: GDCM knows the
    syntax (it listed the file) but could not decode it."""
    why = (" that SimpleITK's GDCM, flare's DICOM reader, could not decode (no codec for it, "
           "or damaged data)" if known else
           ", which SimpleITK's GDCM, flare's DICOM reader, does not read")
    return (f"pixel data in {syntax_name(uid)}{why}; no package adds codecs to it: store the "
            "series uncompressed, or as JPEG, JPEG-LS, JPEG 2000 or RLE")


def _itk_reason(error: Exception) -> str:
    """The message of an ITK exception without the source file and object address."""
    text = str(error)
    found = re.findall(r"ITK ERROR: [^\n]*?\): ([^\n]+)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (found[-1] if found else lines[-1] if lines else type(error).__name__).strip()[:160]


def _header(path: str | Path):
    """A function ``tag('gggg|eeee') -> str`` over one file's header; None if unreadable."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return lambda key: reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _left_out(tag) -> str | None:
    """Why an image with these tags is no slice of a CT volume (None: it may be one): a
    secondary capture or a segmentation (SOP class), an object of a modality in
    :data:`NOT_CT_SLICES`, or a localizer (ImageType)."""
    if tag("0008|0016") in SECONDARY_CAPTURE:
        return "a secondary capture image (a screenshot or scanned page)"
    if tag("0008|0016") in _SEG_SOP_CLASSES:
        return NOT_CT_SLICES["SEG"]
    modality = tag("0008|0060").upper()
    if modality in NOT_CT_SLICES:
        return f"{NOT_CT_SLICES[modality]}, Modality {modality}"
    if "LOCALIZER" in (v.strip().upper() for v in tag("0008|0008").split("\\")):
        return "a localizer (ImageType LOCALIZER)"
    return None


def _whole_series_left_out(files: tuple[str, ...]) -> str | None:
    """Why a whole series is no CT volume: its first file is a localizer or a secondary
    capture and so are all the others (one header read per series, more only then). A
    series that mixes them with CT slices is kept: :func:`read_series` leaves them out."""
    first = _header(files[0])
    why = _left_out(first) if first is not None else None
    if why is None:
        return None
    for f in files[1:]:
        tag = _header(f)
        if tag is None or _left_out(tag) is None:
            return None
    return why if len(files) == 1 else f"{why}, and {len(files) - 1} more images of its series"


def case_base(root: Path, folder: Path) -> str:
    """The case id of a folder's series: its path relative to ``root``, every run of
    characters that are neither letters (of any script) nor digits nor ``.-`` -> ``_``
    (``/`` and spaces included). Two folders can map to one id (``a b`` and ``a_b``):
    :func:`scan_dicom` refuses both rather than let one's output replace the other's."""
    rel = folder.relative_to(root).as_posix() if folder != root else root.name
    return re.sub(r"(?:[^\w.-]|_)+", "_", rel).strip("_.") or "series"


@contextlib.contextmanager
def _decoders_quiet() -> Iterator[None]:
    """The process's stderr (file descriptor 2) sent to /dev/null meanwhile: GDCM's JPEG and
    JPEG 2000 decoders print a line of their own for every file whose pixel data they cannot
    parse -- when listing a series too -- so a damaged compressed series of 500 slices would
    bury flare's one line under a thousand. Only on the main thread, where no other thread
    of flare's writes meanwhile (a series read ahead on a worker thread keeps stderr)."""
    saved = None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(OSError, ValueError):  # no fd 2, or a closed sys.stderr
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
    if saved is None:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def scan_dicom(root: Path) -> Found:
    """The CT series under ``root``, folders with DICOM files but no series flare can read
    (their problem), and the files left out with why: localizer and secondary capture
    series, DICOM files GDCM lists in no series (a report, a damaged file), files named
    ``.dcm`` without a DICOM header. A DICOMDIR is left out silently. A folder whose only
    DICOM images are in a transfer syntax GDCM cannot decode is a problem naming it."""
    with _decoders_quiet():
        return _scan_dicom(Path(root))


def _scan_dicom(root: Path) -> Found:
    import SimpleITK as sitk

    root = Path(root)
    found: list[Series] = []
    problems: list[tuple[Path, str]] = []
    ignored: list[tuple[Path, str]] = []
    by_folder: dict[Path, list[Path]] = {}
    others: list[Path] = []  # beside DICOM files, a README say (those of the root: stray)
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if _is_dicom(p):
            by_folder.setdefault(p.parent, []).append(p)
        elif p.suffix.lower() == ".dcm":
            ignored.append((p, "not a DICOM file: no DICM header, ignored"))
        elif (p.parent != root and not p.name.startswith(".")
              and p.suffix.lower() not in REPORT_SUFFIXES and nifti_suffix(p) is None):
            others.append(p)
    ignored += [(p, "neither NIfTI nor DICOM, ignored") for p in others if p.parent in by_folder]
    for folder in sorted(by_folder):
        try:
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError as e:
            problems.append((folder, f"cannot list DICOM series ({_itk_reason(e)})"))
            continue
        listed: set[str] = set()
        kept = []
        for uid in sorted(uids):
            files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            listed.update(Path(f).name for f in files)
            why = _whole_series_left_out(files) if files else "no files"
            if why is None:
                kept.append((uid, files))
            else:
                ignored.append((Path(files[0]) if files else folder, f"{why}, not segmented"))
        undecodable: dict[str, list[Path]] = {}
        for p in by_folder[folder]:
            if p.name in listed:
                continue
            meta = file_meta(p)
            if meta.get("sop_class") == _DICOMDIR:
                continue
            syntax = meta.get("transfer_syntax", "")
            if syntax and syntax not in NATIVE_SYNTAXES and syntax not in GDCM_DECODES:
                undecodable.setdefault(syntax, []).append(p)
            else:
                ignored.append((p, "in no series: no image GDCM can read (a report or "
                                   "other non-image object, or a damaged file), ignored"))
        for syntax, paths in undecodable.items():
            if kept:
                ignored.extend((p, f"{_undecodable(syntax)}; ignored") for p in paths)
            else:
                problems.append((folder, f"{len(paths)} DICOM file{'s' if len(paths) > 1 else ''}"
                                         f" ({paths[0].name}, ...) with {_undecodable(syntax)}"))
        base = case_base(root, folder)
        for k, (uid, files) in enumerate(kept):
            why = _undecodable_first(files)
            if why:  # found here, where its decoder's lines are muted (see _decoders_quiet)
                problems.append((folder, f"series {uid}: {why}"))
                continue
            found.append(Series(base if len(kept) == 1 else f"{base}_{k + 1}", folder, uid,
                                files))
    found, clashes = _without_clashes(root, found)
    dicom = frozenset(p for paths in by_folder.values() for p in paths)
    return Found(found, problems + clashes, ignored, dicom)


def _without_clashes(root: Path, found: list[Series]
                     ) -> tuple[list[Series], list[tuple[Path, str]]]:
    """The series whose case id no other series has, and a problem for each of the others:
    their outputs would have one file name, so neither is segmented (the folders are to be
    renamed)."""
    by_id: dict[str, list[Series]] = {}
    for s in found:
        by_id.setdefault(s.case, []).append(s)
    clashes = []
    for case, group in by_id.items():
        if len(group) > 1:
            for s in group:
                others = ", ".join(_shown(root, o.folder) for o in group if o is not s)
                series = f" (series {s.uid})" if sum(o.folder == s.folder for o in group) > 1 \
                    else ""
                clashes.append((s.folder, f"its series{series} would take case id '{case}', "
                                          f"as {others} would: rename one of the folders; "
                                          "not segmented"))
    return [s for s in found if len(by_id[s.case]) == 1], clashes


def _shown(root: Path, folder: Path) -> str:
    return "the folder itself" if folder == root else f"'{folder.relative_to(root)}'"


def find_series(root: Path) -> tuple[list[Series], list[tuple[Path, str]]]:
    """The CT series under ``root`` and (folder, problem) for folders GDCM cannot read (see
    :func:`scan_dicom`, which also says which files were left out)."""
    found = scan_dicom(root)
    return found.series, found.problems


def _tag(reader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def read_series(folder: Path | str, uid: str) -> tuple[np.ndarray, Any]:
    """``(array[z, y, x] in HU, Geometry)`` of one CT series; DataError for anything that is
    not a single-frame CT series on a regular grid, naming the file at fault where one is.

    Localizer and secondary capture images that share the series' UID are left out. The
    rescale slope and intercept are GDCM's to apply, per slice; where they are missing GDCM
    applies the DICOM defaults, slope 1 and intercept 0. flare takes them so except where
    that gives wrong HU: a slice without them when the others have them, and an intercept
    missing on every slice of unsigned pixels (which cannot hold air's -1000 HU, so the
    values are not HU) are errors. Slices with differing rescale values are read as
    float32, so that none is cut to the first slice's pixel type.
    """
    with _decoders_quiet():
        return _read_series(folder, uid)


def _read_series(folder: Path | str, uid: str) -> tuple[np.ndarray, Any]:
    import SimpleITK as sitk

    from flarecli.core.io.nifti import from_sitk

    where = f"{folder} (series {uid})"
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    if not files:
        raise DataError(f"{where}: no DICOM files in the series")
    head = _header(files[0])
    if head is not None and _left_out(head):
        files = [f for f in files if (tag := _header(f)) is None or not _left_out(tag)]
        head = _header(files[0]) if files else head
    if head is None:
        raise DataError(f"{where}: {_unreadable(files[0]) or 'unreadable DICOM'}")
    modality = head("0008|0060")
    if modality != "CT":
        raise DataError(f"{where}: modality {modality or 'missing'}, flare segments CT only")
    frames = head("0028|0008")
    if frames and frames.isdigit() and int(frames) > 1:
        raise DataError(f"{where}: a multi-frame object ({frames} frames); export the series "
                        "as single-frame slices")
    image, reader, files = _read_slices(files, where)
    if _differing_rescale(reader, files, where):
        image, reader = _execute(files, float32=True)
    _check_spacing(reader, files, where)
    return from_sitk(image, where)


def _execute(files: list[str], float32: bool = False):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    if float32:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute(), reader


def _undecodable_first(files) -> str:
    """Why the first slice of a compressed series cannot be decoded ('' if it can, or if the
    series is not compressed): one slice tried when the folder is searched, before any
    series is read whole, since a decoder that fails prints a line of its own for every
    slice (a read that fails names the same file: :func:`_why_unread`)."""
    if file_meta(files[0]).get("transfer_syntax", "") in NATIVE_SYNTAXES:
        return ""
    return _unreadable(files[0])


def _read_slices(files: list[str], where: str):
    """(image, reader, files) of the slices, localizer and secondary capture images left
    out: known from the slices' own tags once read, or -- when the read fails, e.g. on a
    localizer of another size -- from each file's header."""
    def slice_tags(i: int):
        return lambda key: (reader.GetMetaData(i, key).strip()
                            if reader.HasMetaDataKey(i, key) else "")

    if len(files) < 2:
        raise DataError(f"{where}: a single slice, expected a 3-D series")
    try:
        image, reader = _execute(files)
        odd = [f for i, f in enumerate(files) if _left_out(slice_tags(i))]
    except RuntimeError as e:
        odd = [f for f in files if (tag := _header(f)) is not None and _left_out(tag)]
        if not odd:
            raise DataError(f"{where}: {_why_unread(files, e)}") from None
    if odd:
        files = [f for f in files if f not in odd]
        if len(files) < 2:
            raise DataError(f"{where}: a single slice, expected a 3-D series")
        try:
            image, reader = _execute(files)
        except RuntimeError as e:
            raise DataError(f"{where}: {_why_unread(files, e)}") from None
    return image, reader, files


def _unreadable(path: str | Path) -> str:
    """Why one DICOM file cannot be read: its transfer syntax, or ITK's reason."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.Execute()
    except RuntimeError as e:
        syntax = file_meta(path).get("transfer_syntax", "")
        if syntax and syntax not in NATIVE_SYNTAXES and syntax not in GDCM_DECODES:
            return f"{Path(path).name}: {_undecodable(syntax, known=True)}"
        if syntax in GDCM_DECODES:
            return (f"{Path(path).name}: its {syntax_name(syntax)} pixel data cannot be "
                    "decoded (damaged?)")
        return f"{Path(path).name}: cannot be read ({_itk_reason(e)})"
    return ""


def _why_unread(files: list[str], error: Exception) -> str:
    """Why a series read failed, naming a file: the first that cannot be read alone, or
    one whose size differs from the others'."""
    for f in files:
        why = _unreadable(f)
        if why:
            return why
    sizes = []
    for f in files:
        tag = _header(f)
        sizes.append((tag("0028|0011"), tag("0028|0010")) if tag is not None else ("", ""))
    common = max(set(sizes), key=sizes.count)
    for f, size in zip(files, sizes, strict=True):
        if size != common:
            return (f"{Path(f).name} is {'x'.join(size)} pixels, the other slices "
                    f"{'x'.join(common)}: not one volume")
    return f"cannot read the series ({_itk_reason(error)})"


def _differing_rescale(reader, files: list[str], where: str) -> bool:
    """Whether the slices' rescale values differ (see :func:`read_series` for the rules);
    DataError where the HU would be wrong."""
    def values(key: str) -> list[str]:
        return [reader.GetMetaData(i, key).strip() if reader.HasMetaDataKey(i, key) else ""
                for i in range(len(files))]

    intercepts, slopes = values("0028|1052"), values("0028|1053")
    for name, found in (("RescaleIntercept", intercepts), ("RescaleSlope", slopes)):
        missing = [i for i, v in enumerate(found) if not v]
        if missing and len(missing) < len(found):
            raise DataError(f"{where}: {Path(files[missing[0]]).name} has no {name} while "
                            "other slices have one: its HU are unknown")
    if not intercepts[0] and values("0028|0103")[0] == "0":
        raise DataError(f"{where}: no RescaleIntercept, and the pixel values are unsigned: "
                        "they cannot be HU (air is -1000 HU); restore the intercept (often "
                        "-1024) the series was stored with")
    try:
        pairs = {(float(a or 0), float(b or 1)) for a, b in zip(intercepts, slopes, strict=True)}
    except ValueError:
        raise DataError(f"{where}: a RescaleIntercept or RescaleSlope that is not a number") \
            from None
    return len(pairs) > 1


#: Slices stacked further than this off their normal (a gantry tilt) are refused.
MAX_TILT_DEGREES = 0.1


def _check_spacing(reader, files: list[str], where: str) -> None:
    """The slices must share one orientation and be equally spaced along its normal (no
    gap, no duplicate); the error names the slice at fault, or the files of the folder
    that were not read (a damaged slice drops out of its series and leaves a gap)."""
    def floats(text: str, n: int) -> np.ndarray:
        values = [float(v) for v in text.split("\\")]
        if len(values) != n or not np.all(np.isfinite(values)):
            raise ValueError(text)
        return np.array(values)

    positions: list[float] = []
    points: list[np.ndarray] = []
    first = None
    for i, f in enumerate(files):
        name = Path(f).name
        tags = {k: reader.GetMetaData(i, k) if reader.HasMetaDataKey(i, k) else ""
                for k in ("0020|0032", "0020|0037")}
        try:
            pos = floats(tags["0020|0032"], 3)
        except ValueError:
            raise DataError(f"{where}: {name} has no valid ImagePositionPatient "
                            f"({tags['0020|0032'].strip() or 'missing'})") from None
        try:
            o = floats(tags["0020|0037"], 6)
        except ValueError:
            raise DataError(f"{where}: {name} has no valid ImageOrientationPatient "
                            f"({tags['0020|0037'].strip() or 'missing'})") from None
        if first is None:
            # ITK would put a non-orthonormal orientation back to the identity, unsaid
            if (abs(np.linalg.norm(o[:3]) - 1) > 1e-3 or abs(np.linalg.norm(o[3:]) - 1) > 1e-3
                    or abs(float(o[:3] @ o[3:])) > 1e-3):
                raise DataError(f"{where}: {name}'s ImageOrientationPatient "
                                f"({tags['0020|0037'].strip()}) is not two orthogonal unit "
                                "vectors")
            spacing = (reader.GetMetaData(i, "0028|0030")
                       if reader.HasMetaDataKey(i, "0028|0030") else "")
            try:  # ITK would take 1 mm, unsaid
                if not np.all(floats(spacing, 2) > 0):
                    raise ValueError(spacing)
            except ValueError:
                raise DataError(f"{where}: {name} has no valid PixelSpacing "
                                f"({spacing.strip() or 'missing'})") from None
            normal = np.cross(o[:3], o[3:])
            first, normal = (name, o), normal / np.linalg.norm(normal)
        elif np.abs(o - first[1]).max() > 1e-4:
            raise DataError(f"{where}: {name} is oriented otherwise than {first[0]}: not one "
                            "volume")
        positions.append(float(pos @ normal))
        points.append(pos)
    if len(points) > 1:  # the slices must stack along their normal: ITK drops a shear
        span = points[-1] - points[0]
        along = float(span @ normal)
        tilt = np.degrees(np.arctan2(np.linalg.norm(span - along * normal), abs(along)))
        if along != 0 and tilt > MAX_TILT_DEGREES:
            raise DataError(f"{where}: the slices are stacked at {tilt:.1f} degrees off their "
                            "normal (gantry tilt), which would misplace every voxel; resample "
                            "the series to an untilted grid first (e.g. dcm2niix corrects it)")
    steps = np.abs(np.diff(positions))
    if len(steps) and (steps.min() < 1e-3 or
                       steps.max() - steps.min() > 0.01 * steps.mean() + 1e-3):
        unread = _not_in_any_series(Path(files[0]).parent)
        raise DataError(f"{where}: slices are not equally spaced (steps {steps.min():.3f}"
                        f"-{steps.max():.3f} mm): a missing or duplicate slice?"
                        + (f" Not read in this folder: {', '.join(unread[:3])}"
                           f"{', ...' if len(unread) > 3 else ''} (damaged, or no image)"
                           if unread else ""))


def _not_in_any_series(folder: Path) -> list[str]:
    """Names of the files of ``folder`` that GDCM puts in no series and that are DICOM or
    named ``.dcm`` (a file cut short before its DICOM header); DICOMDIR aside."""
    import SimpleITK as sitk

    try:
        listed = {Path(f).name for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
                  for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)}
    except RuntimeError:
        return []
    return [p.name for p in sorted(folder.iterdir()) if p.is_file() and p.name not in listed
            and (_is_dicom(p) or p.suffix.lower() == ".dcm")
            and file_meta(p).get("sop_class") != _DICOMDIR]


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


def _dataset_tags(ds):
    """``tag('gggg|eeee') -> str`` over a pydicom data set, as :func:`_header` over a file
    (multiple values joined by backslashes)."""
    def tag(key: str) -> str:
        group, element = (int(part, 16) for part in key.split("|"))
        item = ds.get((group, element))
        value = None if item is None else item.value
        if value is None:
            return ""
        if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
            return "\\".join(str(v) for v in value)
        return str(value).strip()
    return tag


def seg_sources(folder: Path | str, uid: str) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The series' slices as a DICOM SEG references them (pydicom datasets without pixel
    data, in the series' order, localizer and secondary capture images left out as
    :func:`read_series` leaves them out) and what was filled in for that, by attribute: ``{"how":
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
    kept = [(f, ds) for f, ds in zip(files, sources, strict=True)
            if _left_out(_dataset_tags(ds)) is None]  # as read_series leaves them out
    files, sources = [f for f, _ in kept], [ds for _, ds in kept]
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
    from flarecli.core.io.files import atomic_path
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
