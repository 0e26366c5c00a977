"""What one synthetic case is made of: :class:`CaseSpec` holds every random choice of a
case, and rendering is a pure function of it.

Anatomy is defined once, in a canonical patient frame in millimetres (ITK/LPS: +x patient
left, +y posterior, +z superior): each :class:`Part` is a union of deformed superellipsoids
(:class:`Ellipsoid`) and tubes along polylines (:class:`Tube`) with tissue sub-classes, the
:class:`Frame` the whole-volume structures (body layers, ribs, lungs, table, spine), and the
:class:`Grid` the voxel grid it is sampled onto. Also here: the shared constants (label paint
order, tumor hosts, z extents, directions) and the tissue classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from flarecli.core.labels import TUMOR

Vec3 = tuple[float, float, float]

#: Order in which the 13 organ labels are painted (later wins where shapes overlap).
ORGAN_IDS: tuple[int, ...] = (1, 3, 11, 4, 12, 2, 13, 9, 7, 8, 10, 6, 5)


TUMOR_ID = TUMOR
#: Organ labels that can host a tumor (about 85 % of tumors; the rest are para-aortic nodes).
TUMOR_HOSTS: tuple[int, ...] = (1, 2, 13, 4, 11)
_HOST_WEIGHTS: tuple[float, ...] = (0.36, 0.14, 0.14, 0.12, 0.09)  # sums to 0.85
MAX_TUMORS = 8
#: Chance of 0, 1, 2, 3 or 4 lesions in a scan whose count is not given.
TUMOR_COUNT_P: tuple[float, ...] = (0.25, 0.35, 0.2, 0.12, 0.08)
Z_EXTENTS: tuple[str, ...] = ("abdomen", "chest", "pelvis", "chest+pelvis")
_Z_EXTENT_P = (0.4, 0.2, 0.25, 0.15)

#: Supported direction-cosine matrices (ITK row-major), keyed by the storage convention.
DIRECTIONS: dict[str, tuple[float, ...]] = {
    "LPS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    "RAS": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    "LPI": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "RPS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
}
_DIRECTION_P = (0.4, 0.35, 0.1, 0.15)


class Tissue(IntEnum):
    """Tissue classes painted into the uint8 tissue map (more classes than labels)."""

    AIR = 0
    PAD = 1  # outside the reconstruction circle: exactly -1024, no noise
    SUBQ_FAT = 2
    VISC_FAT = 3
    MUSCLE = 4
    LUNG = 5
    HEART = 6
    TABLE = 7
    RIB = 8
    CORTEX = 9
    MARROW = 10
    DISC = 11
    CANAL = 12
    BOWEL_WALL = 13
    BOWEL_FLUID = 14
    COLON_CONTENT = 15
    GAS = 16
    BLADDER = 17
    ARTERY = 18
    VEIN = 19
    LIVER = 20
    SPLEEN = 21
    KIDNEY_CORTEX = 22
    KIDNEY_MEDULLA = 23
    PANCREAS = 24
    AORTA = 25
    IVC = 26
    ADRENAL = 27
    GALLBLADDER = 28
    ESOPHAGUS = 29
    STOMACH_WALL = 30
    STOMACH_CONTENT = 31
    DUODENUM_WALL = 32
    DUODENUM_CONTENT = 33
    TUMOR0 = 34  # tumor n: rim TUMOR0 + 2n, necrotic core TUMOR0 + 2n + 1


N_TISSUES = int(Tissue.TUMOR0) + 2 * MAX_TUMORS


@dataclass(frozen=True)
class Grid:
    """Voxel grid of one case.

    shape_zyx: numpy array shape (nz, ny, nx); spacing_xyz: mm (ITK order); origin_xyz: LPS mm of
    element [0, 0, 0]; direction: 9 floats, ITK row-major 3x3 direction cosines.
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]


@dataclass(frozen=True)
class Waves:
    """Smooth deformation ``sum_k amp_k * sin(vec_k . p + phase_k)`` added to an implicit value.

    amp: dimensionless (implicit-function units); vec: rad/mm in LPS; phase: rad.
    """

    amp: tuple[float, ...] = ()
    vec: tuple[Vec3, ...] = ()
    phase: tuple[float, ...] = ()

    @property
    def total(self) -> float:
        """Largest possible absolute deformation (sum of |amp|)."""
        return float(sum(abs(a) for a in self.amp))


@dataclass(frozen=True)
class Ellipsoid:
    """Superellipsoid ``sum_i |u_i / r_i|^power < 1`` with local coords ``u = R^T (p - center)``.

    center: LPS mm; radii: mm along the local axes; rot: 9 floats row-major, columns = local axes
    expressed in LPS.
    """

    center: Vec3
    radii: Vec3
    rot: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    power: float = 2.0


@dataclass(frozen=True)
class Tube:
    """Tube along a polyline (LPS mm points) with radius (mm) linearly varying between points."""

    points: tuple[Vec3, ...]
    radii: tuple[float, ...]


@dataclass(frozen=True)
class Part:
    """One painted structure: union of shapes plus deformation, with tissue sub-classes.

    The implicit value q is ``min(shape values) + waves`` (q = squared normalised distance for
    ellipsoids with power 2 and for tubes); voxels with q < 1 are painted. Voxels with
    q < inner_q get ``inner_tissue``; inner voxels with y < gas_y (anterior, LPS mm) get gas.
    ``kind == "spine"`` is a placeholder that paints the vertebral column from the frame.
    """

    name: str
    label: int
    tissue: int
    shapes: tuple[Ellipsoid | Tube, ...] = ()
    waves: Waves = Waves()
    inner_tissue: int = -1
    inner_q: float = 0.0
    gas_y: float = -math.inf
    notches: tuple[Ellipsoid, ...] = ()
    confine: str = ""  # name of a part whose q < confine_q bounds this part (tumors)
    confine_q: float = 1.2
    keep_labels: tuple[int, ...] = ()  # labels this part never overwrites
    hard: bool = False  # may overwrite protected tissues (fat, muscle, bone); never air
    kind: str = "shapes"


@dataclass(frozen=True)
class Frame:
    """Whole-volume structures: body layers, ribs, lungs, table, vertebral column (mm, LPS)."""

    body_center: tuple[float, float]
    body_axes: tuple[float, float]
    body_power: float
    axes_mod: tuple[float, float, float, float, float, float]  # amp/freq/phase for a and b
    hip_widen: float
    pelvis_z: float
    fat_mm: float
    muscle_mm: float
    rib_period: float
    rib_phase: float
    rib_width: float
    rib_slope: float  # mm of descent per radian around the body
    rib_z_lo: float
    costal_z: float
    sternum_z: float
    dome_right: tuple[float, float]  # (x, z) of the right diaphragm dome top
    dome_left: tuple[float, float]
    dome_k: float  # dome curvature (1/mm)
    dome_slope_y: float  # dome lowering per mm posterior
    mediastinum: tuple[float, float, float]  # half-width, centre y, half-depth (mm)
    table_y: float
    table_mm: float
    spine_y: float
    vb_axes: tuple[float, float]
    cortex_mm: float
    canal_r: float
    arch_mm: float
    vert_period: float
    vert_phase: float
    disc_frac: float
    spine_z_lo: float
    process_len: float
    transverse_half: float


@dataclass(frozen=True)
class CaseSpec:
    """Every random choice of one case; rendering is a pure function of this object.

    hu / texture: per-tissue HU mean and texture amplitude (HU), indexed by :class:`Tissue` id;
    noise_sigma: HU std of the (correlated) noise after blurring at the reference voxel
    (:data:`NOISE_REFERENCE_VOXEL_MM3`; :func:`noise_at`); blur_sigma_zyx: voxels.
    """

    grid: Grid
    scale: float
    z_extent: str
    z_range: tuple[float, float]
    frame: Frame
    parts: tuple[Part, ...]
    hu: tuple[float, ...]
    texture: tuple[float, ...]
    noise_sigma: float
    blur_sigma_zyx: tuple[float, float, float]
    texture_cell_mm: float
    pad_circle: bool
    tumor_hosts: tuple[int, ...]  # host label of each tumor (0 = extra-organ node)
    seed: int


def _rot_matrix(rot: tuple[float, ...]) -> NDArray[np.float64]:
    return np.asarray(rot, dtype=np.float64).reshape(3, 3)
