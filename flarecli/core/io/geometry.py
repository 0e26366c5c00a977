"""The voxel grid of a scan, and the one axis convention of flare (stated here only).

Arrays and spacing at the seams: ``zyx``
-----------------------------------------
Volumes are NumPy arrays in SimpleITK's order ``array[z, y, x]`` -- the reverse of the ITK /
NIfTI voxel index ``(i, j, k)``. So ``array.shape == shape_zyx`` and array axis 0 is NIfTI voxel
axis 2 (the axis the official FLARE script calls ``[:, :, z]``). Between modules, a spacing
travels in the same order as the array it describes: ``spacing_zyx`` (mm), as do sizes, patches
and boxes (``size_zyx``, ``patch_zyx``, :data:`flarecli.core.preprocessing.boxes.Box`).

Only the NIfTI boundary speaks ITK's order: :class:`Geometry` stores what the header holds, in
ITK's order and frame (LPS: +x patient left, +y posterior, +z superior), with the order in the
name -- ``spacing_xyz``, ``origin_xyz`` -- and hands the array order out as
:attr:`Geometry.spacing_zyx`. ``direction`` is ITK's row-major 3x3 matrix whose column c is the
physical direction of voxel index axis c. The physical point of ``array[k, j, i]`` is
``origin_xyz + D @ (spacing_xyz * (i, j, k))``. (Physical points and the synthetic phantom's
anatomy stay in LPS ``xyz``: they are positions in the patient, not array axes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from flarecli.core.errors import DataError

#: Tolerances for "same grid" checks: NIfTI stores geometry as float32, and real label files
#: often differ from their image in the last digits.
SPACING_ATOL_MM = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of a volume (see the module docstring for the axis convention)."""

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 floats, ITK row-major
    #: how the file's header placed this grid, when a user should know (a NIfTI file whose
    #: qform and sform disagree, or that stores neither); not part of the grid
    note: str | None = field(default=None, compare=False)

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
