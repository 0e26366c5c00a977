"""Case discovery and image/label pairing (nnU-Net / FLARE naming).

Images are ``<case>_0000.nii.gz`` (one CT channel), labels ``<case>.nii.gz``; ``.nii`` works
too. An image without a label is an unlabeled case. A folder whose image names do not all
carry a ``_NNNN`` channel suffix is read as plain ``<case>.nii.gz`` names (common for inference
inputs), so ``case_0001.nii.gz`` there is the case ``case_0001``. Names starting with '.'
are ignored (flare's own temporary files), and so are ``.json`` and ``.csv`` files (run
records, score tables, ``dataset.json``, nnU-Net's ``plans.json`` in prediction folders).
Other files are *stray*: ignored, and reported as a note (a README.txt beside the scans, a
sub-folder, an extra channel). A problem with a case itself (a duplicate, a label without an
image) is attached to the case, never raised, so one bad file does not stop a run.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from flarecli.core.errors import DataError, InputError
from flarecli.core.io.nifti_header import (
    REPORT_SUFFIXES,
    header_or_none,
    nifti_suffix,
    strip_nifti_suffix,
)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def absolute(path: Path | str) -> str:
    """The absolute path of a case's file, symlinks resolved where they can be. A symlink
    loop (which ``Path.resolve`` raises for) keeps its own absolute name, so that the read
    of it fails as that case's problem and never stops a run."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)


@dataclass
class Case:
    """One case: an image and/or a label file, plus problems found while pairing."""

    id: str
    image: Path | None = None  # a NIfTI file, or the folder of a DICOM series
    label: Path | None = None
    problems: list[str] = field(default_factory=list)
    series_uid: str | None = None  # the DICOM series of ``image`` (a folder)

    @property
    def labeled(self) -> bool:
        return self.label is not None


@dataclass
class Discovery:
    cases: list[Case]
    #: files that are not cases and are ignored: (path, why) -- notes, not errors
    stray: list[tuple[Path, str]] = field(default_factory=list)
    #: problems of the folder itself (a dataset.json with foreign label ids): (path, message)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_problems(self) -> int:
        return len(self.problems) + sum(1 for c in self.cases if c.problems)


def require_dir(path: Path | None, what: str) -> Path:
    if path is None:
        raise InputError(f"no {what} folder given")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} folder not found")
    if not path.is_dir():
        raise InputError(f"{path}: {what} is not a folder")
    return path


def case_id_problem(case_id: str) -> str | None:
    """Why a case id cannot name a file (it becomes ``<id>.nii.gz``, cache and record names),
    or None: no path separators, not '.' or '..', no leading dot, no control characters."""
    if any(c in case_id for c in ("/", "\\", "\0")) or not case_id.isprintable():
        return f"case id {case_id!r} holds a path separator or a control character"
    if not case_id or case_id in (".", "..") or case_id.startswith("."):
        return f"case id '{case_id}' cannot name a file"
    return None


def _nifti_files(folder: Path, stray: list[tuple[Path, str]]) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() in REPORT_SUFFIXES:
            continue  # flare's temporary files; run records, reports, dataset.json
        if p.is_dir():
            stray.append((p, "a sub-folder, ignored (flare reads flat folders)"))
        elif nifti_suffix(p) is None:
            stray.append((p, "not a NIfTI file (.nii.gz or .nii), ignored"))
        else:
            files.append(p)
    return files


def image_case_id(path: Path) -> tuple[str, str | None]:
    """(case id, channel) of an image file name; channel is None without a ``_NNNN`` suffix."""
    stem = strip_nifti_suffix(path)
    m = _CHANNEL.match(stem)
    if m:
        return m.group("case"), m.group("channel")
    return stem, None


def _grid(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """(size, voxel size) from a NIfTI header, None when it cannot be read (the file's own
    problem is reported when the case is read)."""
    h = header_or_none(path)
    if h is None:
        return None
    return tuple(h.dims[:3]), tuple(abs(float(v)) for v in h.pixdim[1:4])


def _not_a_channel(path: Path, case: Case | None, cid: str) -> str | None:
    """Why ``path`` (``CASE_0001`` say) cannot be a further channel of its case's scan, or None
    (a channel flare leaves out with a note): there is no ``CASE_0000``, or its grid is not
    the ``_0000`` scan's -- scans of several patients numbered as one case's channels, which a
    note would have left unsegmented without an error."""
    if case is None or case.image is None:
        return (f"{path.name}: a channel with no {cid}_0000 beside it; flare reads one CT "
                "channel, _0000 (a scan named like a channel?)")
    mine, first = _grid(path), _grid(case.image)
    if mine is None or first is None or (mine[0] == first[0] and all(
            math.isclose(a, b, rel_tol=1e-3) for a, b in zip(mine[1], first[1], strict=True))):
        return None

    def shown(values) -> str:
        return "x".join(f"{v:g}" for v in values)

    return (f"{path.name} is not on the grid of {case.image.name} (size {shown(mine[0])} vs "
            f"{shown(first[0])}, voxel {shown(mine[1])} vs {shown(first[1])} mm): not a "
            "channel of one scan; scans of several cases named as channels of one? The case "
            "is not segmented: rename the files")


def discover_cases(images: Path | None, labels: Path | None = None) -> Discovery:
    """Pair the images of a folder with the labels of another.

    Either folder may be None (labels only: e.g. predictions or ground truth). Returns the cases
    sorted by id. Case problems recorded: duplicate case ids (the case keeps the first file
    in name order), labels without an image; stray files: extra channels, sub-folders,
    non-NIfTI files. Raises InputError only when a given folder does not exist.
    """
    stray: list[tuple[Path, str]] = []
    by_id: dict[str, Case] = {}

    if images is not None:
        files = _nifti_files(require_dir(images, "images"), stray)
        channels = [image_case_id(p)[1] for p in files]
        # nnU-Net naming only when every name carries a channel suffix and one is _0000;
        # otherwise a name like 'case_0001.nii.gz' is the case 'case_0001', not channel 1.
        with_channel = bool(files) and None not in channels and "0000" in channels
        extra: list[tuple[Path, str, str]] = []  # (file, case, channel) of channels past _0000
        for p in files:
            cid, channel = image_case_id(p) if with_channel else (strip_nifti_suffix(p), None)
            if channel not in (None, "0000"):
                extra.append((p, cid, channel))
                continue
            case = by_id.setdefault(cid, Case(cid))
            if case.image is not None:
                case.problems.append(f"duplicate image for case '{cid}': {case.image.name}, "
                                     f"{p.name}")
                continue
            case.image = p
        for p, cid, channel in extra:
            why = _not_a_channel(p, by_id.get(cid), cid)
            if why is None:
                stray.append((p, f"channel _{channel}, ignored: flare uses a single CT channel "
                                 "(_0000)"))
            else:
                by_id.setdefault(cid, Case(cid)).problems.append(why)

    if labels is not None:
        for p in _nifti_files(require_dir(labels, "labels"), stray):
            cid = strip_nifti_suffix(p)
            case = by_id.get(cid)
            if case is None:
                if images is not None:
                    case = by_id.setdefault(cid, Case(cid))
                    if case.label is None:
                        case.problems.append(f"label {p.name} has no image")
                else:
                    case = by_id.setdefault(cid, Case(cid))
            if case.label is not None:
                case.problems.append(f"duplicate label for case '{cid}': {case.label.name}, "
                                     f"{p.name}")
                continue
            case.label = p

    return Discovery(cases=[by_id[k] for k in sorted(by_id)], stray=stray)


def label_files(folder: Path) -> Discovery:
    """Cases of a folder of label maps (predictions, ground truth): ``<case>.nii.gz``."""
    return discover_cases(None, folder)


def discover_scans(folder: Path) -> Discovery:
    """The scans of an input folder: NIfTI images, or -- when it holds none -- the DICOM CT
    series under it (one per sub-folder, folders of folders, or the folder itself; see
    ``io.dicom``). Notes then name what was left out (a localizer, a report, a damaged or
    non-DICOM ``.dcm`` file, a file or sub-folder that is neither NIfTI nor DICOM), never
    the DICOM files of the series themselves."""
    found = discover_cases(folder)
    if any(c.image is not None for c in found.cases):
        return found
    from flarecli.core.io.dicom import case_base, scan_dicom

    dicom = scan_dicom(folder)
    cases = [Case(s.case, image=s.folder, series_uid=s.uid) for s in dicom.series]
    ids = {c.id for c in cases}
    for path, message in dicom.problems:  # each under an id of its own, so each is counted
        base = cid = case_base(Path(folder), path)
        k = 0
        while cid in ids:  # base_unreadable, base_unreadable1, ...
            cid, k = f"{base}_unreadable{k or ''}", k + 1
        ids.add(cid)
        cases.append(Case(cid, problems=[f"{path}: {message}"]))
    explained = dicom.dicom | {p for p, _ in dicom.ignored}
    with_dicom = {p.parent for p in dicom.dicom}
    stray = []
    for p, message in found.stray:
        if p in explained:
            continue  # a slice of a series, or a file left out with a note of its own
        if p.is_dir():
            if any(d == p or p in d.parents for d in with_dicom):
                continue
            message = "a sub-folder without DICOM files, ignored"
        elif dicom.series or dicom.problems:
            message = "neither NIfTI nor DICOM, ignored"
        stray.append((p, message))
    stray += [(p, m) for p, m in dicom.ignored]
    return Discovery(cases=sorted(cases, key=lambda c: c.id),
                     stray=sorted(stray, key=lambda s: str(s[0])))


def read_scan(image: Path | str, series_uid: str | None = None):
    """``(array[z, y, x], Geometry)`` of a NIfTI file or of a DICOM series in a folder."""
    if series_uid is not None:
        from flarecli.core.io.dicom import read_series

        return read_series(image, series_uid)
    from flarecli.core.io.nifti import read_volume

    return read_volume(Path(image))


def read_labelled_scan(label: Path | str, image: Path | str, series_uid: str | None = None):
    """``(labels uint8, geometry, CT array)`` of a label map and its scan (a NIfTI file or a
    DICOM series). Raises DataError ``label vs image ...`` when their grids differ."""
    from flarecli.core.io.nifti import read_label_map

    labels, geometry = read_label_map(label, "label")
    ct, ct_geometry = read_scan(image, series_uid)
    mismatch = geometry.mismatches(ct_geometry)
    if mismatch:
        raise DataError("label vs image " + "; ".join(mismatch))
    return labels, geometry, ct
