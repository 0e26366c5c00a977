"""Reading and writing NIfTI volumes with SimpleITK: the boundary where ITK's ``xyz`` order
becomes flare's ``array[z, y, x]`` (:mod:`flarecli.core.io.geometry` states the convention).

Every read checks the header and the data first (:mod:`flarecli.core.io.nifti_header`); every
write is atomic and read back whole before it takes its name (:mod:`flarecli.core.io.files`).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from flarecli.core.errors import DataError, DiskFull, InputError, WriteFailed
from flarecli.core.io.files import atomic_path, damaged
from flarecli.core.io.geometry import Geometry, checked_geometry
from flarecli.core.io.nifti_header import (
    NiftiHeader,
    count_nonfinite,
    header_zooms,  # noqa: F401 -- core/metrics imports it from here
    inspect_header,
    nifti_suffix,
    transform_note,
)
from flarecli.core.labels import check_label_values

# ITK prints multi-line warnings (e.g. "unexpected scales in sform") straight to stderr, in
# the middle of progress bars; flare reports problems itself, one line per file.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


def geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """Geometry of an image, or of a reader after ``ReadImageInformation()``.

    A NIfTI file without qform and sform but with a negative pixdim gives the reader a
    negative spacing and the decoded image that axis flipped in its direction instead; both
    become the image's form, so a header read agrees with a full read."""
    size = image.GetSize()
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    direction[:, spacing < 0] *= -1
    return Geometry(
        shape_zyx=(int(size[2]), int(size[1]), int(size[0])),
        spacing_xyz=tuple(float(v) for v in np.abs(spacing)),  # type: ignore[arg-type]
        origin_xyz=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(v) + 0.0 for v in direction.ravel()),
    )


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    return reader


def missing_why(path: Path) -> str:
    """Why a path that is no regular file cannot be read: a folder, a symlink loop, a broken
    symlink, something else (a FIFO, a socket), or nothing at all."""
    if path.is_dir():
        return "a folder, not a file"
    if path.exists():
        return "not a regular file"
    if not path.is_symlink():
        return "file not found"
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises this for a loop
        return "a symlink loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
    return f"a broken symlink (to {os.readlink(path)})"


def _checked(path: Path) -> NiftiHeader:
    """The header of an existing NIfTI file, checked (see :func:`inspect_header`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing_why(path)}")
    if nifti_suffix(path) is None:
        raise InputError(f"{path}: not a NIfTI file (expected .nii.gz or .nii)")
    return inspect_header(path)


def _read_sitk(path: Path) -> sitk.Image:
    try:
        return _reader(path).Execute()
    except RuntimeError as e:
        raise _itk_error(path, e, "unreadable or truncated NIfTI") from e


def _itk_error(path: Path, e: Exception, what: str) -> DataError:
    """The one line for a file ITK refused. A sheared or singular orientation matrix is said
    as such: ITK reports it as a failed read, which a user would take for a damaged file."""
    reason = _itk_reason(e)
    if "orthonormal" in reason.lower():
        return DataError(f"{path}: its orientation matrix (sform or qform) is not orthonormal "
                         f"(sheared or singular), which ITK does not read ({reason})")
    return DataError(f"{path}: {what} ({reason})")


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
    header = _checked(path)
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _itk_error(path, e, "unreadable NIfTI header") from e
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: image is {reader.GetDimension()}-D, expected 3-D")
    geometry = checked_geometry(geometry_of(reader), str(path))
    return replace(geometry, note=transform_note(header, geometry))


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
        # finite stored values can still overflow when scaled (int16 data, scl_slope 1e36)
        scaled = int(array.size - np.count_nonzero(np.isfinite(array)))
        if scaled:
            raise DataError(f"{path}: {scaled} NaN/inf voxels once scaled by the header's "
                            "scl_slope / scl_inter")
    return array, replace(geometry, note=transform_note(header, geometry))


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
    array, geometry = read_volume(Path(path))
    labels, problems = check_label_values(array)
    if labels is None or problems:
        text = "; ".join(p.removeprefix("label ") for p in problems)
        raise InputError(f"{Path(path).name}: {what} {text}")
    return labels, geometry


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
