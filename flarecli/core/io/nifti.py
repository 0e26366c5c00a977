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
import gzip
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from flarecli.core.errors import DataError, FlareError, InputError

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


def _read_sitk(path: Path) -> sitk.Image:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if nifti_suffix(path) is None:
        raise InputError(f"{path}: not a NIfTI file (expected .nii.gz or .nii)")
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
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(f"{path}: unreadable NIfTI header ({_itk_reason(e)})") from e
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: image is {reader.GetDimension()}-D, expected 3-D")
    return geometry_of(reader)


def read_volume(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a 3-D NIfTI as ``(array[z, y, x], geometry)`` with the file's own dtype.

    Raises InputError when the path is missing or not NIfTI, DataError when the file is
    unreadable/truncated, not 3-D (a trailing singleton 4th axis is squeezed), multi-component,
    or holds NaN/inf voxels.
    """
    path = Path(path)
    image = _read_sitk(path)
    check_complete(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise DataError(f"{path}: image is {image.GetDimension()}-D, expected 3-D")
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        bad = count_nonfinite(path)
        if bad:
            raise DataError(f"{path}: {bad} NaN/inf voxels")
    return array, geometry_of(image)


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


@dataclass(frozen=True)
class _RawHeader:
    endian: str
    n_voxels: int
    datatype: int
    bitpix: int
    vox_offset: int
    pixdim: tuple[float, ...] = ()

    @property
    def data_end(self) -> int:
        return self.vox_offset + self.n_voxels * self.bitpix // 8


def _raw_header(f) -> _RawHeader | None:
    """The few NIfTI-1/-2 header fields needed to check the data block; None if not NIfTI."""
    head = f.read(540)
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            pixdim = struct.unpack(endian + "8f", head[76:108])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", head[16:80])
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            break
    else:
        return None
    n = int(np.prod([max(1, d) for d in dims[1: 1 + max(0, min(7, dims[0]))]]))
    return _RawHeader(endian, n, datatype, bitpix, max(offset, 348),
                      tuple(float(v) for v in pixdim))


def _open_raw(path: Path):
    return gzip.open(path, "rb") if nifti_suffix(path) == ".nii.gz" else open(path, "rb")


def check_complete(path: Path) -> None:
    """Raise DataError if the file's data block is shorter than its header says.

    ITK zero-fills a truncated file without complaint, so flare checks itself: for .nii the
    file size; for .nii.gz first the gzip trailer's size field (reading 4 bytes), and only if
    that disagrees (multi-member gzip, or damage) a full streaming decompression.
    """
    path = Path(path)
    try:
        with _open_raw(path) as f:
            header = _raw_header(f)
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{path}: truncated or corrupt gzip stream") from None
    if header is None:
        return  # ITK's own reader decides
    if nifti_suffix(path) == ".nii":
        size = path.stat().st_size
    else:
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            size = struct.unpack("<I", raw.read(4))[0]
        if size == header.data_end % 2**32:
            return
        size = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    size += len(chunk)
        except (OSError, EOFError, zlib.error):
            raise DataError(f"{path}: truncated or corrupt gzip stream") from None
    if size < header.data_end:
        raise DataError(f"{path}: truncated file ({size} of {header.data_end} bytes)")


def header_zooms(path: Path) -> tuple[float, float, float] | None:
    """The voxel size the NIfTI header stores (|pixdim[1:4]|), x, y, z order.

    This is what nibabel's ``get_zooms()`` -- and so the official FLARE script -- uses. ITK
    may derive spacing from the sform matrix instead, which differs in rare files. None when
    the header cannot be read.
    """
    try:
        with _open_raw(Path(path)) as f:
            header = _raw_header(f)
    except (OSError, EOFError, zlib.error):
        return None
    if header is None or len(header.pixdim) < 4:
        return None
    return tuple(abs(v) for v in header.pixdim[1:4])  # type: ignore[return-value]


def count_nonfinite(path: Path) -> int:
    """NaN/inf voxels stored in a floating-point NIfTI file.

    ITK silently reads NaN and inf as 0, so they are counted from the raw data block instead.
    Returns 0 for integer data and for headers this check does not understand.
    """
    with _open_raw(Path(path)) as f:
        header = _raw_header(f)
        dtype = {16: "f4", 64: "f8"}.get(header.datatype) if header else None
        if header is None or dtype is None:
            return 0
        f.seek(header.vox_offset)
        item = np.dtype(header.endian + dtype)
        count = 0
        while chunk := f.read(item.itemsize * (1 << 22)):
            values = np.frombuffer(chunk[: len(chunk) - len(chunk) % item.itemsize], item)
            count += int(values.size - np.count_nonzero(np.isfinite(values)))
        return count


# ---------------------------------------------------------------------------------------------
# writing (atomic)
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    The temporary name starts with '.' (so case discovery ignores it) and keeps the file's
    suffix (SimpleITK picks the format from it). On any error the temporary file is removed,
    so an interrupted run never leaves a half-written output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = nifti_suffix(path) or "".join(path.suffixes[-1:])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing([float(v) for v in geometry.spacing_xyz])
    image.SetOrigin([float(v) for v in geometry.origin_xyz])
    image.SetDirection([float(v) for v in geometry.direction])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
