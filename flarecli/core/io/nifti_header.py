"""NIfTI files before any voxel is decoded: their names, and their headers checked.

ITK zero-fills a truncated file without complaint, reads NaN as 0 and allocates whatever a
damaged header declares, so flare parses the NIfTI-1/-2 header itself (:func:`parse_header`),
checks the file holds every voxel it declares (:func:`inspect_header`) and counts NaN/inf in
the raw data block (:func:`count_nonfinite`). Pure standard library and NumPy: no SimpleITK.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import DataError

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


#: Files that sit beside NIfTI folders without being cases (run records, score tables).
REPORT_SUFFIXES: tuple[str, ...] = (".json", ".csv")


def nifti_suffix(path: Path | str) -> str | None:
    """'.nii.gz' or '.nii' when the name ends so (case-insensitive), else None."""
    name = Path(path).name.lower()
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def strip_nifti_suffix(path: Path | str) -> str:
    name = Path(path).name
    suffix = nifti_suffix(name)
    return name[: -len(suffix)] if suffix else name


#: Voxel types flare reads: NIfTI datatype code -> (numpy kind, bytes per voxel).
DATATYPES: dict[int, tuple[str, int]] = {
    2: ("u1", 1), 4: ("i2", 2), 8: ("i4", 4), 16: ("f4", 4), 64: ("f8", 8), 256: ("i1", 1),
    512: ("u2", 2), 768: ("u4", 4), 1024: ("i8", 8), 1280: ("u8", 8),
}

#: The most a deflate stream can expand (its ratio tops out near 1032:1): a .nii.gz header
#: declaring more voxel bytes than this times the file's size cannot be telling the truth.
MAX_DEFLATE_RATIO = 1100


@dataclass(frozen=True)
class NiftiHeader:
    """What flare checks of a NIfTI-1 or NIfTI-2 header before any voxel is read."""

    version: int
    endian: str
    dims: tuple[int, ...]  # dim[1..dim[0]]
    datatype: int
    bitpix: int
    vox_offset: int
    pixdim: tuple[float, ...]  # pixdim[0..7]
    qform_code: int = 0
    sform_code: int = 0
    quatern: tuple[float, ...] = (0.0,) * 6  # quatern_b, _c, _d, qoffset_x, _y, _z
    srow: tuple[float, ...] = (0.0,) * 12  # srow_x, srow_y, srow_z

    @property
    def n_voxels(self) -> int:
        n = 1
        for d in self.dims[:3]:
            n *= d
        return n

    @property
    def data_end(self) -> int:
        return self.vox_offset + self.n_voxels * DATATYPES[self.datatype][1]


#: Byte offsets and formats of the fields flare checks, per NIfTI version.
_LAYOUT: dict[int, dict[str, tuple[str, int]]] = {
    1: {"dim": ("8h", 40), "datatype": ("h", 70), "bitpix": ("h", 72), "pixdim": ("8f", 76),
        "vox_offset": ("f", 108), "scl": ("2f", 112), "codes": ("2h", 252),
        "quatern": ("6f", 256), "srow": ("12f", 280)},
    2: {"dim": ("8q", 16), "datatype": ("h", 12), "bitpix": ("h", 14), "pixdim": ("8d", 104),
        "vox_offset": ("q", 168), "scl": ("2d", 176), "codes": ("2i", 344),
        "quatern": ("6d", 352), "srow": ("12d", 400)},
}

_MAGIC = {1: slice(344, 348), 2: slice(4, 12)}


def _fields(head: bytes) -> tuple[int, str, dict[str, Any]] | None:
    """The raw header fields of NIfTI-1 or -2 (by ``sizeof_hdr``), or None if neither."""
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0] if len(head) >= 4 else 0
        version = {348: 1, 540: 2}.get(size)
        if version is None or len(head) < size:
            continue
        f: dict[str, Any] = {"magic": head[_MAGIC[version]]}
        for name, (fmt, offset) in _LAYOUT[version].items():
            values = struct.unpack_from(endian + fmt, head, offset)
            f[name] = values if len(values) > 1 else values[0]
        return version, endian, f
    return None


def _finite(values) -> bool:
    return all(np.isfinite(v) for v in values)


def parse_header(head: bytes, where: str) -> NiftiHeader:
    """Check a header's fields (the first 540 bytes of the data); raises DataError naming
    ``where`` and the first field that is wrong."""
    found = _fields(head)
    if found is None:
        raise DataError(f"{where}: not a NIfTI-1 or NIfTI-2 header (sizeof_hdr is neither 348 "
                        "nor 540)")
    version, endian, f = found
    magic_ok = f["magic"] == b"n+1\0" if version == 1 else f["magic"][:4] == b"n+2\0"
    if not magic_ok:
        raise DataError(f"{where}: magic {bytes(f['magic'])!r} is not a single-file NIfTI-"
                        f"{version} ('n+{version}')")
    dim = f["dim"]
    if not 1 <= dim[0] <= 7:
        raise DataError(f"{where}: dim[0] is {dim[0]}, not a number of dimensions (1..7)")
    dims = tuple(int(d) for d in dim[1:1 + dim[0]])
    if any(d < 1 for d in dims):
        raise DataError(f"{where}: dimension sizes {list(dims)} must all be >= 1")
    if len(dims) < 3:
        raise DataError(f"{where}: image is {len(dims)}-D, expected 3-D")
    if len(dims) >= 5 and dims[4] != 1:
        raise DataError(f"{where}: {dims[4]} components per voxel, expected 1")
    if len(dims) >= 4 and dims[3] != 1:
        raise DataError(f"{where}: image is 4-D ({dims[3]} volumes), expected 3-D")
    if any(d != 1 for d in dims[5:]):
        raise DataError(f"{where}: image has {len(dims)} dimensions, expected 3-D")
    if f["datatype"] not in DATATYPES:
        raise DataError(f"{where}: voxel type {f['datatype']} is not supported (integers or "
                        "float32/float64, one component)")
    size = DATATYPES[f["datatype"]][1]
    if f["bitpix"] != 8 * size:
        raise DataError(f"{where}: bitpix {f['bitpix']} does not match datatype "
                        f"{f['datatype']} ({8 * size} bits)")
    offset = f["vox_offset"]
    if not np.isfinite(offset) or offset != int(offset) or offset < (348 if version == 1
                                                                      else 540):
        raise DataError(f"{where}: vox_offset {offset} does not point past the header")
    pixdim = tuple(float(v) for v in f["pixdim"])
    if not all(np.isfinite(v) and abs(v) > 0 for v in pixdim[1:4]):
        raise DataError(f"{where}: voxel size {list(pixdim[1:4])} must be finite and non-zero")
    if not _finite(f["scl"]):
        raise DataError(f"{where}: scl_slope / scl_inter {list(f['scl'])} are not finite")
    qcode, scode = f["codes"]
    if not (0 <= qcode <= 4 and 0 <= scode <= 4):
        raise DataError(f"{where}: qform_code {qcode} / sform_code {scode} must lie in 0..4")
    if qcode > 0 and not _finite(f["quatern"]):
        raise DataError(f"{where}: the qform (quatern_b..qoffset_z) is not finite")
    if scode > 0:
        srow = np.asarray(f["srow"], dtype=np.float64).reshape(3, 4)
        scale = np.abs(srow[:, :3]).max() if _finite(srow.ravel()) else 0.0
        if not _finite(srow.ravel()) or scale == 0 or abs(
                np.linalg.det(srow[:, :3] / scale)) < 1e-6:
            raise DataError(f"{where}: the sform matrix is not finite or not invertible")
    return NiftiHeader(version, endian, dims, int(f["datatype"]), int(f["bitpix"]), int(offset),
                       pixdim, int(qcode), int(scode), tuple(float(v) for v in f["quatern"]),
                       tuple(float(v) for v in f["srow"]))


def _open_raw(path: Path):
    return gzip.open(path, "rb") if nifti_suffix(path) == ".nii.gz" else open(path, "rb")


def inspect_header(path: Path) -> NiftiHeader:
    """Check a NIfTI file's header and that the file holds every voxel it declares, before
    anything is decoded or allocated; raises DataError naming the file and the problem.

    ITK zero-fills a truncated file without complaint, and would allocate whatever a damaged
    header declares. For .nii the file size is compared; for .nii.gz first what a deflate
    stream of this size could hold at most, then the gzip trailer's size field (4 bytes), and
    only if that disagrees (multi-member gzip, or damage) a full streaming decompression.
    """
    path = Path(path)
    try:
        with _open_raw(path) as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise _unreadable(path, err) from None
    header = parse_header(head, str(path))
    need = header.data_end
    stored = path.stat().st_size
    if nifti_suffix(path) == ".nii":
        if stored < need:
            raise DataError(f"{path}: truncated file ({stored} of {need} bytes)")
        return header
    if need > stored * MAX_DEFLATE_RATIO:
        raise DataError(f"{path}: the header declares {need} bytes of voxels, more than a "
                        f"{stored}-byte .nii.gz can hold")
    with open(path, "rb") as raw:
        raw.seek(-4, os.SEEK_END)
        size = struct.unpack("<I", raw.read(4))[0]
    if size == need % 2**32:
        return header
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise _unreadable(path, err) from None
    if size < need:
        raise DataError(f"{path}: truncated file ({size} of {need} bytes)")
    return header


def _unreadable(path: Path, err: BaseException) -> DataError:
    """What kept a file from being read: the file system's reason (permission denied, an
    I/O error) as it says it, else damage to the gzip stream itself (the decoders' errors
    carry no errno)."""
    if isinstance(err, OSError) and err.errno is not None:
        return DataError(f"{path}: cannot be read ({err.strerror or err})")
    return DataError(f"{path}: truncated or corrupt gzip stream")


def header_or_none(path: Path) -> NiftiHeader | None:
    """The file's NIfTI header, None when it cannot be read or parsed (for a caller whose
    file is checked, and its problem reported, elsewhere)."""
    try:
        with _open_raw(Path(path)) as f:
            return parse_header(f.read(540), str(path))
    except (OSError, EOFError, zlib.error, DataError):
        return None


def header_zooms(path: Path) -> tuple[float, float, float] | None:
    """The voxel size the NIfTI header stores (|pixdim[1:4]|), x, y, z order.

    This is what nibabel's ``get_zooms()`` -- and so the official FLARE script -- uses. ITK
    may derive spacing from the sform matrix instead, which differs in rare files. None when
    the header cannot be read.
    """
    header = header_or_none(path)
    if header is None:
        return None
    return tuple(abs(v) for v in header.pixdim[1:4])  # type: ignore[return-value]


def count_nonfinite(path: Path, header: NiftiHeader) -> int:
    """NaN/inf voxels stored in a floating-point NIfTI file.

    ITK silently reads NaN and inf as 0, so they are counted from the raw data block instead.
    Returns 0 for integer data.
    """
    kind, size = DATATYPES[header.datatype]
    if kind[0] != "f":
        return 0
    item = np.dtype(header.endian + kind)
    count = 0
    left = header.n_voxels
    with _open_raw(Path(path)) as f:
        f.seek(header.vox_offset)
        while left > 0 and (chunk := f.read(size * min(left, 1 << 22))):
            values = np.frombuffer(chunk[: len(chunk) - len(chunk) % size], item)
            count += int(values.size - np.count_nonzero(np.isfinite(values)))
            left -= values.size
    return count


#: How far apart (mm, at any corner of the volume) the qform and the sform may place a voxel
#: and still count as one transform: both are stored as float32.
TRANSFORM_ATOL_MM = 0.01

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def qform_affine(header: NiftiHeader) -> np.ndarray:
    """The qform as a 4x4 voxel-index -> LPS-mm matrix (NIfTI's quaternion, ``qfac`` =
    pixdim[0], voxel size |pixdim[1:4]|)."""
    b, c, d, x, y, z = header.quatern
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if header.pixdim[0] < 0 else 1.0
    scale = np.abs(header.pixdim[1:4]) * np.array([1.0, 1.0, qfac])
    out = np.eye(4)
    out[:3, :3] = _RAS_TO_LPS @ rotation @ np.diag(scale)
    out[:3, 3] = _RAS_TO_LPS @ np.array([x, y, z])
    return out


def sform_affine(header: NiftiHeader) -> np.ndarray:
    """The sform (srow_x, srow_y, srow_z) as a 4x4 voxel-index -> LPS-mm matrix."""
    out = np.eye(4)
    out[:3] = _RAS_TO_LPS @ np.asarray(header.srow, dtype=np.float64).reshape(3, 4)
    return out


def _corners(header: NiftiHeader) -> np.ndarray:
    """The volume's 8 corner voxel indices (i, j, k), one per row."""
    ni, nj, nk = (d - 1 for d in header.dims[:3])
    return np.array([[i, j, k] for i in (0, ni) for j in (0, nj) for k in (0, nk)], float)


def _placed(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Where a 4x4 voxel-index -> LPS matrix puts voxel indices (N, 3)."""
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _apart_mm(a: np.ndarray, b: np.ndarray) -> float:
    """The largest distance between corresponding points (N, 3)."""
    return float(np.linalg.norm(a - b, axis=1).max())


def transform_note(header: NiftiHeader, geometry: Any) -> str | None:
    """What a user should know about how the voxel grid was placed in the patient, or None.

    A NIfTI file stores up to two transforms. When both are set and disagree, readers differ
    in which they take (ITK the sform for sform_code 1 or without a qform, else the qform;
    nibabel the sform whenever set), so the note names the one flare read. With neither set
    the orientation is a guess, and a negative pixdim then flips an axis in ITK only.
    ``geometry``: the :class:`~flarecli.core.io.geometry.Geometry` the file was read as.
    """
    q, s = header.qform_code, header.sform_code
    if q == 0 and s == 0:
        text = (f"no qform or sform (both codes 0), so no stored orientation: read as "
                f"{geometry.orientation} with voxel size "
                f"{[round(abs(v), 4) for v in header.pixdim[1:4]]} mm")
        if any(v < 0 for v in header.pixdim[1:4]):
            text += (f"; pixdim {[round(v, 4) for v in header.pixdim[1:4]]} is negative, which "
                     "flips that axis here (other readers may not flip it)")
        return text
    if q == 0 or s == 0:
        return None
    ijk = _corners(header)
    qform, sform = _placed(qform_affine(header), ijk), _placed(sform_affine(header), ijk)
    apart = _apart_mm(qform, sform)
    if apart <= TRANSFORM_ATOL_MM:
        return None
    used = geometry.index_to_physical(ijk[:, ::-1])  # where the grid read puts them
    which = "sform" if _apart_mm(used, sform) <= _apart_mm(used, qform) else "qform"
    return (f"qform (code {q}) and sform (code {s}) disagree by up to {apart:.1f} mm; the "
            f"{which} is used (other readers may take the "
            f"{'qform' if which == 'sform' else 'sform'})")
