"""NIfTI reading and writing with SimpleITK, and the geometry convention of flare.

The one array-axis convention (stated here, used everywhere)
------------------------------------------------------------
Volumes are NumPy arrays in SimpleITK's order ``array[z, y, x]`` -- the reverse of the ITK /
NIfTI voxel index ``(i, j, k)``. So ``array.shape == shape_zyx`` and array axis 0 is NIfTI voxel
axis 2 (the axis the official FLARE script calls ``[:, :, z]``). Physical geometry stays in
ITK's order and frame (LPS: +x patient left, +y posterior, +z superior), with the order in the
name: ``spacing_xyz``, ``origin_xyz``; ``direction`` is ITK's row-major 3x3 matrix whose
column c is the physical direction of voxel index axis c. Use ``Geometry.spacing_zyx`` when
spacing must line up with array axes. The physical point of ``array[k, j, i]`` is
``origin_xyz + D @ (spacing_xyz * (i, j, k))``.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from flarecli.core.errors import DataError, DiskFull, FlareError, InputError, WriteFailed

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

# ITK prints multi-line warnings (e.g. "unexpected scales in sform") straight to stderr, in
# the middle of progress bars; flare reports problems itself, one line per file.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

#: Tolerances for "same grid" checks: NIfTI stores geometry as float32, and real label files
#: often differ from their image in the last digits.
SPACING_ATOL_MM = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


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


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of a volume (see the module docstring for the axis convention)."""

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 floats, ITK row-major

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing_xyz))  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def orientation(self) -> str:
        """Three-letter ITK/DICOM orientation code of the voxel axes, e.g. 'LPS' or 'RAS'."""
        return orientation_code(self.direction)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    def superior_axis(self) -> int:
        """The ARRAY axis (0, 1 or 2) closest to the patient's superior-inferior direction."""
        voxel_axis = int(np.argmax(np.abs(self.direction_matrix[2, :])))
        return 2 - voxel_axis

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Physical LPS points (N, 3) in mm of array indices (N, 3) given as [z, y, x]."""
        ijk = np.asarray(index_zyx, dtype=np.float64)[:, ::-1]
        return np.asarray(self.origin_xyz) + (ijk * np.asarray(self.spacing_xyz)) @ (
            self.direction_matrix.T
        )

    def mismatches(self, other: Geometry) -> list[str]:
        """Human-readable differences to another grid (empty when they match within tolerance)."""
        out = []
        if tuple(self.shape_zyx) != tuple(other.shape_zyx):
            out.append(f"shape {_xyz(self.shape_zyx[::-1])} vs {_xyz(other.shape_zyx[::-1])}")
        if not np.allclose(self.spacing_xyz, other.spacing_xyz, rtol=0, atol=SPACING_ATOL_MM):
            out.append(f"spacing {_xyz(self.spacing_xyz)} vs {_xyz(other.spacing_xyz)} mm")
        if not np.allclose(self.origin_xyz, other.origin_xyz, rtol=0, atol=ORIGIN_ATOL_MM):
            out.append(f"origin {_xyz(self.origin_xyz)} vs {_xyz(other.origin_xyz)} mm")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            out.append(f"direction {self.orientation} vs {other.orientation}")
        return out

    def to_json(self) -> dict:
        return {
            "shape_xyz": list(self.shape_zyx[::-1]),
            "spacing_xyz": [float(v) for v in self.spacing_xyz],
            "origin_xyz": [float(v) for v in self.origin_xyz],
            "direction": [float(v) for v in self.direction],
            "orientation": self.orientation,
        }


def _xyz(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def orientation_code(direction) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        [float(v) for v in direction]
    )


#: Voxel sizes flare accepts, in mm: a micron to a metre. Outside, a header is damaged (and
#: resampling such a scan to a spacing in mm would ask for absurd arrays).
SPACING_RANGE_MM = (1e-3, 1e3)


def checked_geometry(geometry: Geometry, where: str) -> Geometry:
    """``geometry`` when it is plausible; DataError naming ``where`` otherwise."""
    lo, hi = SPACING_RANGE_MM
    if not all(np.isfinite(s) and lo <= s <= hi for s in geometry.spacing_xyz):
        raise DataError(f"{where}: implausible voxel size {_xyz(geometry.spacing_xyz)} mm "
                        f"(flare reads {lo:g} to {hi:g} mm)")
    if not (np.all(np.isfinite(geometry.origin_xyz)) and np.all(np.isfinite(geometry.direction))):
        raise DataError(f"{where}: origin or direction is not finite")
    return geometry


def geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """Geometry of an image, or of a reader after ``ReadImageInformation()``."""
    size = image.GetSize()
    return Geometry(
        shape_zyx=(int(size[2]), int(size[1]), int(size[0])),
        spacing_xyz=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
        origin_xyz=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in image.GetDirection()),
    )


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    return reader


def _checked(path: Path) -> NiftiHeader:
    """The header of an existing NIfTI file, checked (see :func:`inspect_header`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if nifti_suffix(path) is None:
        raise InputError(f"{path}: not a NIfTI file (expected .nii.gz or .nii)")
    return inspect_header(path)


def _read_sitk(path: Path) -> sitk.Image:
    try:
        return _reader(path).Execute()
    except RuntimeError as e:
        raise DataError(f"{path}: unreadable or truncated NIfTI ({_itk_reason(e)})") from e


def _itk_reason(e: Exception) -> str:
    """The informative last line of an ITK exception (they are long and multi-line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(e).__name__
    for prefix in ("Description:", "itk::ERROR:"):
        if prefix in text:
            text = text.split(prefix, 1)[1].strip()
    return text[:200]


def read_header(path: Path) -> Geometry:
    """Geometry only, without decoding voxels (fast). Raises like :func:`read_volume`."""
    path = Path(path)
    _checked(path)
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(f"{path}: unreadable NIfTI header ({_itk_reason(e)})") from e
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: image is {reader.GetDimension()}-D, expected 3-D")
    return checked_geometry(geometry_of(reader), str(path))


def read_volume(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a 3-D NIfTI as ``(array[z, y, x], geometry)`` with the file's own dtype.

    Raises InputError when the path is missing or not NIfTI, DataError when the file is
    unreadable/truncated, not 3-D (a trailing singleton 4th axis is squeezed), multi-component,
    or holds NaN/inf voxels.
    """
    path = Path(path)
    header = _checked(path)
    array, geometry = from_sitk(_read_sitk(path), str(path), finite=False)
    if array.dtype.kind == "f":
        bad = count_nonfinite(path, header)
        if bad:
            raise DataError(f"{path}: {bad} NaN/inf voxels")
    return array, geometry


def from_sitk(image: sitk.Image, where: str, finite: bool = True
              ) -> tuple[np.ndarray, Geometry]:
    """``(array[z, y, x], geometry)`` of a SimpleITK image, checked as files are: one
    component, 3-D (a trailing singleton 4th axis squeezed), a valid geometry and, with
    ``finite``, no NaN/inf voxels. Raises DataError naming ``where``."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{where}: {image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise DataError(f"{where}: image is {image.GetDimension()}-D, expected 3-D")
    geometry = checked_geometry(geometry_of(image), where)
    array = sitk.GetArrayFromImage(image)
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{where}: {int((~np.isfinite(array)).sum())} NaN/inf voxels")
    return array, geometry


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of ``array[z, y, x]`` with exactly ``geometry``."""
    if tuple(array.shape) != tuple(geometry.shape_zyx):
        raise InputError(f"array shape {tuple(array.shape)} does not match grid "
                         f"{geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing([float(v) for v in geometry.spacing_xyz])
    image.SetOrigin([float(v) for v in geometry.origin_xyz])
    image.SetDirection([float(v) for v in geometry.direction])
    return image


def read_label_map(path: Path, what: str = "label") -> tuple[np.ndarray, Geometry]:
    """Read a label map as uint8 FLARE ids.

    Raises InputError naming the file and ``what`` ("partial label", "prediction", ...) for
    NaN, non-integer or out-of-range values, and like :func:`read_volume` otherwise.
    """
    from flarecli.core.labels import check_label_values

    array, geometry = read_volume(Path(path))
    labels, problems = check_label_values(array)
    if labels is None or problems:
        text = "; ".join(p.removeprefix("label ") for p in problems)
        raise InputError(f"{Path(path).name}: {what} {text}")
    return labels, geometry


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
                       pixdim)


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
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{path}: truncated or corrupt gzip stream") from None
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
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{path}: truncated or corrupt gzip stream") from None
    if size < need:
        raise DataError(f"{path}: truncated file ({size} of {need} bytes)")
    return header


def damaged(path: Path) -> str | None:
    """Why a written output cannot be read back whole, or None when it can.

    An output on disk is trusted only when every byte it declares is there: a .nii.gz is
    decompressed to its end (gzip checks its CRC and length), a .nii has at least the bytes
    its header declares, a DICOM file is parsed to its end. Used before an output is renamed
    into place (ITK's NIfTI writer reports no write error: on a full disk it leaves a short
    file and returns) and before a re-run skips an existing output.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".dcm":
            return _dicom_damage(path)
        with open(path, "rb") as raw:
            if nifti_suffix(path) == ".nii":
                header = parse_header(raw.read(540), str(path))
                stored = os.fstat(raw.fileno()).st_size
                return (None if stored >= header.data_end else
                        f"truncated file ({stored} of {header.data_end} bytes)")
            return _gzip_damage(raw, str(path))
    except DataError as e:
        return str(e).removeprefix(f"{path}: ")
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def kept(path: Path, overwrite: bool = False) -> bool:
    """Whether a re-run keeps an existing output: it is there, reads back whole, and is not
    to be redone. An output that does not read back whole is computed again."""
    return not overwrite and Path(path).is_file() and damaged(path) is None


def _gzip_damage(raw, where: str) -> str | None:
    """Decompress a .nii.gz stream to its end in bounded pieces (a label map of 512 x 512 x
    300 in 0.16 s) and compare its length with what the header declares."""
    inflate = zlib.decompressobj(31)
    head = b""
    size = 0
    try:
        while chunk := raw.read(1 << 20):
            while chunk:
                piece = inflate.decompress(chunk, 1 << 16)
                if len(head) < 540:
                    head += piece[:540 - len(head)]
                size += len(piece)
                chunk = inflate.unconsumed_tail
                if inflate.eof:
                    break
            if inflate.eof:
                break
    except zlib.error as e:
        return f"corrupt gzip stream ({e})"
    if not inflate.eof:
        return "truncated gzip stream"
    header = parse_header(head, where)
    if size < header.data_end:
        return f"truncated file ({size} of {header.data_end} bytes)"
    return None


def _dicom_damage(path: Path) -> str | None:
    try:
        import pydicom
    except ImportError:
        return None  # nothing wrote it then: flare writes DICOM only with pydicom
    try:
        data = pydicom.dcmread(path)
        data.PixelData  # noqa: B018 -- a cut file ends before its pixel data
    except Exception as e:  # pydicom raises many types for a damaged file
        return f"unreadable DICOM ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    return None


def header_zooms(path: Path) -> tuple[float, float, float] | None:
    """The voxel size the NIfTI header stores (|pixdim[1:4]|), x, y, z order.

    This is what nibabel's ``get_zooms()`` -- and so the official FLARE script -- uses. ITK
    may derive spacing from the sform matrix instead, which differs in rare files. None when
    the header cannot be read.
    """
    try:
        with _open_raw(Path(path)) as f:
            header = parse_header(f.read(540), str(path))
    except (OSError, EOFError, zlib.error, DataError):
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


# ---------------------------------------------------------------------------------------------
# writing (atomic)
# ---------------------------------------------------------------------------------------------

def _umask() -> int:
    """The process's umask (read once: setting it back at once is the only way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
_HOST = socket.gethostname().replace(".", "_") or "host"
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.part(\..+)?$")


def _write_error(path: Path, error: OSError) -> WriteFailed:
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{path}: no space left on the device ({reason}); stopped",
                        hint="free some space and run the same command again: finished "
                        "outputs are kept")
    return WriteFailed(f"{path}: cannot be written ({reason})")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    The temporary name starts with '.' (so case discovery ignores it), names this host and
    process (so :func:`remove_stale_parts` knows an abandoned one) and keeps the file's
    suffix (SimpleITK picks the format from it). The final file gets the permissions any
    new file of this process would (0666 less the umask), not the private 0600 of a
    temporary file. On any error the temporary file is removed, so an interrupted run never
    leaves a half-written output under the final name. An OSError becomes WriteFailed
    (DiskFull when the device is full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path.parent, path.name)
        suffix = nifti_suffix(path) or "".join(path.suffixes[-1:])
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.",
                                   suffix=f".part{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_parts(folder: Path, name: str | None = None) -> int:
    """Remove temporary files that an interrupted run of this host left in ``folder`` (of
    the output ``name`` only, when given); a live process's file in progress is kept.
    Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    pattern = f".{name}.{_HOST}-*" if name else ".*"
    for p in folder.glob(pattern):
        m = _PART.match(p.name)
        if not m or m.group("host") != _HOST or (name and m.group("name") != name):
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path, what: str, error: type[FlareError] = InputError) -> Any:
    """Parse a JSON file; a missing or unreadable file raises ``error`` naming ``what``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: unreadable {what} ({e})") from e


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def write_volume(path: Path, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write ``array[z, y, x]`` as NIfTI with exactly ``geometry``, atomically.

    Raises InputError if the array shape does not match the geometry.
    """
    path = Path(path)
    if tuple(array.shape) != tuple(geometry.shape_zyx):
        raise InputError(
            f"{path}: array shape {tuple(array.shape)} does not match grid {geometry.shape_zyx}"
        )
    image = to_sitk(array, geometry)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
            problem = None
        except RuntimeError as e:
            problem = _itk_reason(e)
        # ITK reports no failed write (a full disk leaves a short file and no error), so the
        # file is read back before it takes the output's name
        problem = problem or damaged(tmp)
        if problem is not None:
            if shutil.disk_usage(tmp.parent).free < 2 * array.nbytes + (1 << 20):
                raise DiskFull(f"{path}: no space left on the device; stopped",
                               hint="free some space and run the same command again: "
                               "finished outputs are kept")
            raise WriteFailed(f"{path}: cannot be written ({problem})")
