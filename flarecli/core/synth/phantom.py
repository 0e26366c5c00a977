"""FLARE-like synthetic abdominal CT phantom: case sampling and rendering core.

Anatomy is defined once, in a canonical patient frame in millimetres (ITK/LPS: +x patient left,
+y posterior, +z superior), by a :class:`CaseSpec` that holds every random choice of one case.
:func:`render_case` samples that anatomy onto the case's voxel grid through the grid's physical
coordinates, so the same anatomy appears for every direction / spacing / origin.

Rendering pipeline (all deterministic given the spec):

1. *frame*: body outline (skin/subcutaneous fat, muscle wall, visceral fat), ribs, lungs,
   CT table -- evaluated over the whole volume in z-chunks;
2. *parts* in painting order (later parts win): muscles, bones, bowel, unlabelled vessels,
   the 13 labelled organs (:data:`ORGAN_IDS`), then tumors (label 14). Every part is a union of
   deformed superellipsoids and tubes along polylines, evaluated only inside its index-space
   bounding box;
3. *intensity*: tissue -> HU lookup (per-case values), smooth intra-tissue texture, correlated
   Gaussian noise, partial-volume Gaussian blur; int16 output clipped to [-1024, 3071].

Arrays are numpy arrays in (z, y, x) = (k, j, i) order; physical point of element [k, j, i] is
``origin + D @ (spacing_xyz * (i, j, k))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from flarecli.core.labels import TUMOR
from flarecli.core.runtime import usable_cpus

__all__ = [
    "DIRECTIONS",
    "MAX_TUMORS",
    "ORGAN_IDS",
    "TUMOR_HOSTS",
    "TUMOR_ID",
    "Z_EXTENTS",
    "CaseSpec",
    "Ellipsoid",
    "Frame",
    "Grid",
    "Part",
    "Tissue",
    "Tube",
    "Waves",
    "index_to_physical",
    "render_case",
    "render_layers",
    "sample_case_spec",
]

F32 = np.float32
Vec3 = tuple[float, float, float]
Box = tuple[int, int, int, int, int, int]  # k0, k1, j0, j1, i0, i1 (half-open, array order)
FArr = NDArray[np.float32]
BArr = NDArray[np.bool_]

#: Order in which the 13 organ labels are painted (later wins where shapes overlap).
ORGAN_IDS: tuple[int, ...] = (1, 3, 11, 4, 12, 2, 13, 9, 7, 8, 10, 6, 5)
TUMOR_ID = TUMOR
#: Organ labels that can host a tumor (about 85 % of tumors; the rest are para-aortic nodes).
TUMOR_HOSTS: tuple[int, ...] = (1, 2, 13, 4, 11)
_HOST_WEIGHTS: tuple[float, ...] = (0.36, 0.14, 0.14, 0.12, 0.09)  # sums to 0.85
MAX_TUMORS = 8
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

_CHUNK_VOXELS = 1 << 22  # voxels per evaluation chunk (bounds temporaries to ~16 MB each)


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
_HARD = (Tissue.AIR, Tissue.PAD, Tissue.TABLE)
_PROTECTED = _HARD + (
    Tissue.SUBQ_FAT,
    Tissue.MUSCLE,
    Tissue.RIB,
    Tissue.CORTEX,
    Tissue.MARROW,
    Tissue.DISC,
    Tissue.CANAL,
)


def _allowed_lut(protected: Sequence[int]) -> BArr:
    lut = np.ones(256, dtype=bool)
    lut[list(protected)] = False
    return lut


_ALLOW_SOFT = _allowed_lut(_PROTECTED)
_ALLOW_HARD = _allowed_lut(_HARD)


# ----------------------------------------------------------------------------------------------
# Spec dataclasses
# ----------------------------------------------------------------------------------------------
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
    noise_sigma: HU std of the (correlated) noise after blurring; blur_sigma_zyx: voxels.
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


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------
def _grid_matrix(grid: Grid) -> NDArray[np.float64]:
    """3x3 matrix whose columns are the LPS displacement (mm) of one step along i, j, k."""
    d = np.asarray(grid.direction, dtype=np.float64).reshape(3, 3)
    return d * np.asarray(grid.spacing_xyz, dtype=np.float64)[None, :]


def index_to_physical(grid: Grid, kji: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map array indices ``kji`` (N, 3) in (k, j, i) order to LPS points (N, 3) in mm."""
    ijk = np.asarray(kji, dtype=np.float64)[:, ::-1]
    return np.asarray(grid.origin_xyz, dtype=np.float64) + ijk @ _grid_matrix(grid).T


def _box_from_aabb(grid: Grid, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> Box | None:
    """Index-space box (clipped to the grid) covering the LPS axis-aligned box [lo, hi] (mm)."""
    corners = np.array(
        [
            [(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]]
            for a in (0, 1)
            for b in (0, 1)
            for c in (0, 1)
        ],
        dtype=np.float64,
    )
    inv = np.linalg.inv(_grid_matrix(grid))
    ijk = (corners - np.asarray(grid.origin_xyz)) @ inv.T
    mn = np.floor(ijk.min(axis=0)).astype(np.int64)
    mx = np.ceil(ijk.max(axis=0)).astype(np.int64) + 1
    nz, ny, nx = grid.shape_zyx
    n = (nx, ny, nz)
    lo_i = [int(min(max(mn[a], 0), n[a])) for a in range(3)]
    hi_i = [int(min(max(mx[a], 0), n[a])) for a in range(3)]
    if any(hi_i[a] <= lo_i[a] for a in range(3)):
        return None
    return (lo_i[2], hi_i[2], lo_i[1], hi_i[1], lo_i[0], hi_i[0])


def _intersect(a: Box, b: Box) -> Box | None:
    out = (
        max(a[0], b[0]),
        min(a[1], b[1]),
        max(a[2], b[2]),
        min(a[3], b[3]),
        max(a[4], b[4]),
        min(a[5], b[5]),
    )
    if out[1] <= out[0] or out[3] <= out[2] or out[5] <= out[4]:
        return None
    return out


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
        min(b[4] for b in boxes),
        max(b[5] for b in boxes),
    )


def _slices(box: Box, rel: Box | None = None) -> tuple[slice, slice, slice]:
    """Slices of ``box``; relative to the origin of ``rel`` when given."""
    o = (0, 0, 0) if rel is None else (rel[0], rel[2], rel[4])
    return (
        slice(box[0] - o[0], box[1] - o[0]),
        slice(box[2] - o[1], box[3] - o[1]),
        slice(box[4] - o[2], box[5] - o[2]),
    )


def _box_shape(box: Box) -> tuple[int, int, int]:
    return (box[1] - box[0], box[3] - box[2], box[5] - box[4])


def _chunks(box: Box, max_voxels: int | None = None) -> Iterator[Box]:
    """Split ``box`` along k into pieces of at most ``max_voxels`` voxels (at least 1 slice)."""
    if max_voxels is None:
        max_voxels = _CHUNK_VOXELS
    per_slice = (box[3] - box[2]) * (box[5] - box[4])
    step = max(1, max_voxels // max(per_slice, 1))
    for k0 in range(box[0], box[1], step):
        yield (k0, min(box[1], k0 + step), box[2], box[3], box[4], box[5])


def _coords(grid: Grid, box: Box) -> tuple[FArr, FArr, FArr]:
    """LPS coordinates (mm, float32) x, y, z of the voxels of ``box``, as broadcastable arrays.

    For axis-aligned directions each coordinate depends on one index only and stays a thin
    (1, 1, ni) / (1, nj, 1) / (nk, 1, 1) array, so downstream arithmetic is cheap.
    """
    m = _grid_matrix(grid)
    idx = (
        np.arange(box[4], box[5], dtype=F32).reshape(1, 1, -1),
        np.arange(box[2], box[3], dtype=F32).reshape(1, -1, 1),
        np.arange(box[0], box[1], dtype=F32).reshape(-1, 1, 1),
    )
    out: list[FArr] = []
    for r in range(3):
        acc: FArr = np.full((1, 1, 1), grid.origin_xyz[r], dtype=F32)
        for c in range(3):
            coef = float(m[r, c])
            if coef != 0.0:
                acc = acc + idx[c] * coef
        out.append(acc)
    return out[0], out[1], out[2]


def _rot_matrix(rot: tuple[float, ...]) -> NDArray[np.float64]:
    return np.asarray(rot, dtype=np.float64).reshape(3, 3)


def _ellipsoid_aabb(e: Ellipsoid, margin: float) -> tuple[NDArray[np.float64], ...]:
    r = _rot_matrix(e.rot) * np.asarray(e.radii)[None, :]
    half = np.sqrt((r**2).sum(axis=1)) if e.power <= 2.0 else np.abs(r).sum(axis=1)
    half = half * (1.0 + margin) ** (1.0 / min(e.power, 2.0)) + 1e-3
    c = np.asarray(e.center)
    return c - half, c + half


def _eval_ellipsoid(e: Ellipsoid, x: FArr, y: FArr, z: FArr) -> FArr:
    d = (x - e.center[0], y - e.center[1], z - e.center[2])
    rot = _rot_matrix(e.rot)
    q: FArr | None = None
    for i in range(3):
        u: FArr | None = None
        for r in range(3):
            coef = float(rot[r, i]) / e.radii[i]
            if abs(coef) > 1e-12:
                term = d[r] * coef
                u = term if u is None else u + term
        if u is None:
            continue
        t = u * u if e.power == 2.0 else np.abs(u) ** e.power
        q = t if q is None else q + t
    assert q is not None
    return q


def _eval_segment(
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    ra: float,
    rb: float,
    x: FArr,
    y: FArr,
    z: FArr,
) -> FArr:
    """Squared distance to segment [a, b] divided by the squared local radius."""
    e = b - a
    l2 = float(e @ e)
    dx, dy, dz = x - float(a[0]), y - float(a[1]), z - float(a[2])
    if l2 < 1e-9:
        return (dx * dx + dy * dy + dz * dz) * (1.0 / (ra * ra))
    t = dx * float(e[0] / l2) + dy * float(e[1] / l2) + dz * float(e[2] / l2)
    np.clip(t, 0.0, 1.0, out=t)
    px = dx - t * float(e[0])
    py = dy - t * float(e[1])
    pz = dz - t * float(e[2])
    rad = t * (rb - ra) + ra
    return (px * px + py * py + pz * pz) / (rad * rad)


_Seg = tuple[NDArray[np.float64], NDArray[np.float64], float, float]
_Item = tuple[str, object, Box]


def _shape_items(shapes: Sequence[Ellipsoid | Tube], grid: Grid, margin: float) -> list[_Item]:
    """Flatten shapes into evaluable items (ellipsoids and tube segments) with index boxes."""
    items: list[_Item] = []
    for s in shapes:
        if isinstance(s, Ellipsoid):
            lo, hi = _ellipsoid_aabb(s, margin)
            box = _box_from_aabb(grid, lo, hi)
            if box is not None:
                items.append(("e", s, box))
            continue
        pts = np.asarray(s.points, dtype=np.float64)
        grow = math.sqrt(1.0 + margin)
        for n in range(len(pts) - 1):
            ra, rb = float(s.radii[n]), float(s.radii[n + 1])
            half = max(ra, rb) * grow + 1e-3
            lo = np.minimum(pts[n], pts[n + 1]) - half
            hi = np.maximum(pts[n], pts[n + 1]) + half
            box = _box_from_aabb(grid, lo, hi)
            if box is not None:
                items.append(("s", (pts[n], pts[n + 1], ra, rb), box))
    return items


def _items_q(items: Sequence[_Item], waves: Waves, grid: Grid, box: Box) -> FArr:
    """Implicit value q (float32, shape of ``box``) of a union of items plus deformation."""
    q = np.full(_box_shape(box), np.inf, dtype=F32)
    for kind, obj, ibox in items:
        sub = _intersect(ibox, box)
        if sub is None:
            continue
        x, y, z = _coords(grid, sub)
        if kind == "e":
            assert isinstance(obj, Ellipsoid)
            qs = _eval_ellipsoid(obj, x, y, z)
        else:
            a, b, ra, rb = cast(_Seg, obj)
            qs = _eval_segment(a, b, ra, rb, x, y, z)
        view = q[_slices(sub, box)]
        np.minimum(view, qs, out=view)
    if waves.amp:
        sel = q < 1.0 + waves.total
        if sel.any():
            x, y, z = _coords(grid, box)
            shp = q.shape
            xs = np.broadcast_to(x, shp)[sel]
            ys = np.broadcast_to(y, shp)[sel]
            zs = np.broadcast_to(z, shp)[sel]
            dq = np.zeros(xs.shape, dtype=F32)
            for amp, vec, ph in zip(waves.amp, waves.vec, waves.phase, strict=True):
                dq += amp * np.sin(xs * vec[0] + ys * vec[1] + zs * vec[2] + ph)
            q[sel] += dq
    return q


# ----------------------------------------------------------------------------------------------
# Painting
# ----------------------------------------------------------------------------------------------
def _paint_part(
    part: Part,
    grid: Grid,
    label: NDArray[np.uint8],
    tissue: NDArray[np.uint8],
    by_name: dict[str, Part],
) -> None:
    margin = part.waves.total
    items = _shape_items(part.shapes, grid, margin)
    if not items:
        return
    notch_items = _shape_items(part.notches, grid, 0.0)
    host = by_name.get(part.confine) if part.confine else None
    host_items = _shape_items(host.shapes, grid, host.waves.total) if host else []
    allow = _ALLOW_HARD if part.hard else _ALLOW_SOFT
    for cbox in _chunks(_union([it[2] for it in items])):
        q = _items_q(items, part.waves, grid, cbox)
        mask = q < 1.0
        if not mask.any():
            continue
        sl = _slices(cbox)
        lab = label[sl]
        tis = tissue[sl]
        mask &= allow[tis]
        if notch_items:
            mask &= _items_q(notch_items, Waves(), grid, cbox) >= 1.0
        if host is not None:
            mask &= _items_q(host_items, host.waves, grid, cbox) < part.confine_q
        if part.keep_labels:
            mask &= ~np.isin(lab, part.keep_labels)
        if not mask.any():
            continue
        lab[mask] = part.label
        tis[mask] = part.tissue
        if part.inner_tissue >= 0 and part.inner_q > 0.0:
            inner = mask & (q < part.inner_q)
            tis[inner] = part.inner_tissue
            if part.gas_y > -math.inf:
                _, y, _ = _coords(grid, cbox)
                gas = inner & (y < part.gas_y)
                tis[gas] = Tissue.GAS


def _run_parallel(
    fn: Callable[[int, int], None], jobs: Sequence[tuple[int, int]], threads: int | None
) -> None:
    """Run ``fn(k0, k1)`` over disjoint slabs, in threads (numpy/scipy release the GIL)."""
    n = threads if threads is not None else min(4, usable_cpus())
    if n <= 1 or len(jobs) <= 1:
        for k0, k1 in jobs:
            fn(k0, k1)
        return
    with ThreadPoolExecutor(max_workers=n) as ex:
        for fut in [ex.submit(fn, k0, k1) for k0, k1 in jobs]:
            fut.result()


def _paint_frame(spec: CaseSpec, tissue: NDArray[np.uint8], threads: int | None) -> None:
    """Body layers, ribs, lungs and table over the whole volume (chunked along k)."""
    fr = spec.frame
    grid = spec.grid
    nz, ny, nx = grid.shape_zyx
    cx, cy = fr.body_center
    a0, b0 = fr.body_axes
    p = fr.body_power
    am, af, ap, bm, bf, bp = fr.axes_mod

    def job(k0: int, k1: int) -> None:
        cbox = (k0, k1, 0, ny, 0, nx)
        x, y, z = _coords(grid, cbox)
        dx = x - cx
        dy = y - cy
        hip = fr.hip_widen / (1.0 + np.exp((z - fr.pelvis_z) / 25.0))
        a_z = a0 * (1.0 + am * np.sin(z * af + ap) + hip)
        b_z = b0 * (1.0 + bm * np.sin(z * bf + bp))
        ax = np.abs(dx) ** p
        ay = np.abs(dy) ** p

        def ell(off: float, ax: FArr = ax, ay: FArr = ay, a_z: FArr = a_z, b_z: FArr = b_z) -> FArr:
            return ax * (a_z - off) ** (-p) + ay * (b_z - off) ** (-p)

        shape = _box_shape(cbox)
        t = np.full(shape, Tissue.AIR, dtype=np.uint8)
        body = np.broadcast_to(ell(0.0) < 1.0, shape)
        t[body] = Tissue.SUBQ_FAT
        wall = np.broadcast_to(ell(fr.fat_mm) < 1.0, shape)
        t[wall] = Tissue.MUSCLE
        cav = np.broadcast_to(ell(fr.fat_mm + fr.muscle_mm) < 1.0, shape)
        t[cav] = Tissue.VISC_FAT
        # lungs above the diaphragm domes, outside the mediastinum
        (xr, zr), (xl, zl) = fr.dome_right, fr.dome_left
        zd = np.maximum(zr - fr.dome_k * (x - xr) ** 2, zl - fr.dome_k * (x - xl) ** 2)
        zd = zd - fr.dome_slope_y * y
        if float(np.max(z)) > float(np.min(zd)):
            mw, my, mh = fr.mediastinum
            med = (dx / mw) ** 2 + ((y - my) / mh) ** 2 < 1.0
            lung = cav & (z > zd) & ~med
            t[lung] = Tissue.LUNG
        # ribs inside the muscle wall, periodic in a z that descends anteriorly
        if float(np.max(z)) > fr.rib_z_lo:
            # angle around the body from the posterior midline (0) to anterior (pi): ribs
            # descend by rib_slope mm per radian as they wrap around
            theta = np.arctan2(np.abs(dx) / a0, dy / b0)
            z_eff = z + fr.rib_slope * theta
            on = np.mod(z_eff - fr.rib_phase, fr.rib_period) < fr.rib_width
            low = z < fr.costal_z
            front = np.where(low, dy > -0.25 * b_z, dy > -0.3 * b_z)
            front = front | ((z >= fr.costal_z) & (np.abs(dx) > 0.22 * a_z))
            rib = wall & ~cav & on & front & (z > fr.rib_z_lo)
            sternum = wall & ~cav & (np.abs(dx) < 0.09 * a_z) & (dy < 0) & (z > fr.sternum_z)
            t[rib | sternum] = Tissue.RIB
        # CT table below (posterior to) the patient, curved up at the sides
        yt = fr.table_y - 0.0008 * dx * dx
        table = (y >= yt) & (y < yt + fr.table_mm) & (np.abs(dx) < 230.0)
        table = np.broadcast_to(table, shape) & (t == Tissue.AIR)
        t[table] = Tissue.TABLE
        tissue[_slices(cbox)] = t

    jobs = [(c[0], c[1]) for c in _chunks((0, nz, 0, ny, 0, nx))]
    _run_parallel(job, jobs, threads)


def _paint_spine(
    fr: Frame, grid: Grid, label: NDArray[np.uint8], tissue: NDArray[np.uint8]
) -> None:
    """Vertebral bodies (cortical rim + marrow), discs, canal and posterior elements."""
    rx, ry = fr.vb_axes
    yv = fr.spine_y
    yc = yv + ry + fr.canal_r + 1.0
    ar = fr.canal_r + fr.arch_mm
    half_x = max(fr.transverse_half, rx) + 5.0
    lo = np.array([-half_x, yv - ry - 5.0, fr.spine_z_lo])
    hi = np.array([half_x, yc + ar + fr.process_len + 5.0, 1e5])
    box = _box_from_aabb(grid, lo, hi)
    if box is None:
        return
    period = fr.vert_period
    c = fr.cortex_mm
    for cbox in _chunks(box):
        x, y, z = _coords(grid, cbox)
        shape = _box_shape(cbox)
        sl = _slices(cbox)
        t = tissue[sl]
        lab = label[sl]
        dyv = y - yv
        ev = (x / rx) ** 2 + (dyv / ry) ** 2
        ei = (x / (rx - c)) ** 2 + (dyv / (ry - c)) ** 2
        ph = np.mod(z - fr.vert_phase, period) / period
        zin = z >= fr.spine_z_lo
        disc = ph < fr.disc_frac
        endplate = (ph < fr.disc_frac + c / period) | (ph > 1.0 - c / period)
        mid = (ph > fr.disc_frac + 0.15) & (ph < 0.85)
        rc2 = x * x + (y - yc) ** 2
        canal = (rc2 < fr.canal_r**2) & zin
        arch = (rc2 >= fr.canal_r**2) & (rc2 < ar * ar) & ~disc
        spinous = (
            (np.abs(x) < 0.3 * fr.arch_mm + 2.0) & (y > yc) & (y < yc + ar + fr.process_len) & mid
        )
        transverse = (np.abs(x) < fr.transverse_half) & (np.abs(y - yc) < 0.8 * fr.arch_mm) & mid
        post = (arch | spinous | transverse) & zin
        body = (ev < 1.0) & zin
        ok = _ALLOW_HARD[t]
        cortex = np.broadcast_to(post, shape) | (body & ~disc & ((ei >= 1.0) | endplate))
        marrow = body & ~disc & (ei < 1.0) & ~endplate
        disc_v = body & disc
        for m, tis in (
            (cortex, Tissue.CORTEX),
            (marrow, Tissue.MARROW),
            (disc_v, Tissue.DISC),
            (canal, Tissue.CANAL),
        ):
            mm = np.broadcast_to(m, shape) & ok
            t[mm] = tis
            lab[mm] = 0


def render_layers(
    spec: CaseSpec, threads: int | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Paint the label map and the tissue map of a case.

    threads: worker threads for whole-volume passes (None: min(4, cpu count)); the result
    does not depend on it.

    Returns (label, tissue), both uint8 with shape ``spec.grid.shape_zyx``; label ids as in
    :data:`flarecli.core.labels.LABELS`, tissue ids as in :class:`Tissue`.
    """
    shape = spec.grid.shape_zyx
    label = np.zeros(shape, dtype=np.uint8)
    tissue = np.zeros(shape, dtype=np.uint8)
    _paint_frame(spec, tissue, threads)
    by_name = {p.name: p for p in spec.parts}
    for part in spec.parts:
        if part.kind == "spine":
            _paint_spine(spec.frame, spec.grid, label, tissue)
        else:
            _paint_part(part, spec.grid, label, tissue, by_name)
    if spec.pad_circle:
        nz, ny, nx = shape
        jj = (np.arange(ny) - (ny - 1) / 2.0)[:, None]
        ii = (np.arange(nx) - (nx - 1) / 2.0)[None, :]
        outside = jj * jj + ii * ii > (min(nx, ny) / 2.0) ** 2
        tissue[:, outside] = Tissue.PAD
        label[:, outside] = 0
    return label, tissue


# ----------------------------------------------------------------------------------------------
# Intensities
# ----------------------------------------------------------------------------------------------
def _lin_weights(n: int, spacing: float, cell: float) -> tuple[NDArray[np.intp], FArr, int]:
    u = np.arange(n, dtype=np.float64) * (spacing / cell)
    i0 = np.floor(u).astype(np.intp)
    return i0, (u - i0).astype(F32), int(i0.max()) + 2 if n else 2


def _kernel_norm(sigma: float, truncate: float) -> float:
    """sqrt(sum w^2) of scipy's 1-D Gaussian kernel (noise std reduction factor)."""
    if sigma <= 0:
        return 1.0
    rad = int(truncate * sigma + 0.5)
    xs = np.arange(-rad, rad + 1, dtype=np.float64)
    w = np.exp(-0.5 * (xs / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt((w * w).sum()))


def _render_image(
    spec: CaseSpec, tissue: NDArray[np.uint8], threads: int | None = None
) -> NDArray[np.int16]:
    """HU image (int16, shape of ``tissue``) from the tissue map, processed in z-slabs."""
    nz, ny, nx = tissue.shape
    sx, sy, sz = spec.grid.spacing_xyz
    hu_lut = np.zeros(256, dtype=F32)
    tex_lut = np.zeros(256, dtype=F32)
    hu_lut[: len(spec.hu)] = spec.hu
    tex_lut[: len(spec.texture)] = spec.texture
    # smooth texture field: coarse Gaussian noise on a ~cell mm lattice, trilinear upsampling
    cell = spec.texture_cell_mm
    xi, xw, cxn = _lin_weights(nx, sx, cell)
    yi, yw, cyn = _lin_weights(ny, sy, cell)
    zi, zw, czn = _lin_weights(nz, sz, cell)
    trng = np.random.default_rng((spec.seed, 1))
    coarse = trng.standard_normal((czn, cyn, cxn), dtype=F32)
    coarse = ndimage.gaussian_filter(coarse, 0.6, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    cx_ = coarse[:, :, xi] * (1.0 - xw) + coarse[:, :, xi + 1] * xw
    cxy = cx_[:, yi, :] * (1.0 - yw)[None, :, None] + cx_[:, yi + 1, :] * yw[None, :, None]
    del cx_, coarse
    truncate = 3.0
    sig = spec.blur_sigma_zyx
    halo = max(int(truncate * s + 0.5) for s in sig) + 1
    norm = _kernel_norm(sig[0], truncate) * _kernel_norm(sig[1], truncate)
    norm *= _kernel_norm(sig[2], truncate)
    pre_sigma = spec.noise_sigma / norm
    out = np.empty((nz, ny, nx), dtype=np.int16)

    def slab_job(k0: int, k1: int) -> None:
        a0, a1 = max(0, k0 - halo), min(nz, k1 + halo)
        t = tissue[a0:a1]
        hu = hu_lut[t]
        w = zw[a0:a1][:, None, None]
        tex = cxy[zi[a0:a1]] * (1.0 - w)
        tex += cxy[zi[a0:a1] + 1] * w
        tex *= tex_lut[t]
        hu += tex
        del tex
        for k in range(a0, a1):  # per-slice seeds: identical noise whatever the slab layout
            nrng = np.random.default_rng((spec.seed, 2, k))
            hu[k - a0] += nrng.standard_normal((ny, nx), dtype=F32) * pre_sigma
        hu = ndimage.gaussian_filter(hu, sig, mode="nearest", truncate=truncate)
        core = hu[k0 - a0 : k1 - a0]
        core[t[k0 - a0 : k1 - a0] == Tissue.PAD] = -1024.0
        np.clip(core, -1024.0, 3071.0, out=core)
        np.rint(core, out=core)
        out[k0:k1] = core

    slab = max(8, (2 * _CHUNK_VOXELS) // max(ny * nx, 1))
    jobs = [(k0, min(nz, k0 + slab)) for k0 in range(0, nz, slab)]
    _run_parallel(slab_job, jobs, threads)
    return out


def render_case(
    spec: CaseSpec, threads: int | None = None
) -> tuple[NDArray[np.int16], NDArray[np.uint8]]:
    """Render one case: (image int16 HU, label uint8), both of shape ``spec.grid.shape_zyx``.

    Bit-identical for the same spec whatever ``threads`` is (None: min(4, cpu count)).
    """
    label, tissue = render_layers(spec, threads)
    image = _render_image(spec, tissue, threads)
    return image, label


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
def _unit(v: Sequence[float]) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _axes_rot(w_hint: Sequence[float], u_hint: Sequence[float]) -> NDArray[np.float64]:
    """Rotation with columns (u, v, w): w along ``w_hint``, u as close as possible to u_hint."""
    w = _unit(w_hint)
    u = np.asarray(u_hint, dtype=np.float64)
    u = _unit(u - (u @ w) * w)
    v = np.cross(w, u)
    return np.column_stack([u, v, w])


def _euler(rng: np.random.Generator, deg: float) -> NDArray[np.float64]:
    ax, ay, az = np.deg2rad(rng.uniform(-deg, deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _v3(a: Sequence[float]) -> Vec3:
    return (float(a[0]), float(a[1]), float(a[2]))


class _Sampler:
    """Builds parts for one case: global scale, jitter, coverage floors, deformation waves."""

    def __init__(self, rng: np.random.Generator, scale: float, eff_spacing: NDArray[np.float64]):
        self.rng = rng
        self.s = scale
        self.es = eff_spacing

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def jit(self, mm: float) -> NDArray[np.float64]:
        return self.rng.uniform(-mm, mm, 3)

    def pos(self, p: Sequence[float], jitter: NDArray[np.float64] | None = None) -> Vec3:
        v = np.asarray(p, dtype=np.float64) * self.s
        if jitter is not None:
            v = v + jitter
        return _v3(v)

    def waves(self, n: int, amp: tuple[float, float], wavelength: tuple[float, float]) -> Waves:
        amps, vecs, phs = [], [], []
        for _ in range(n):
            d = _unit(self.rng.normal(size=3))
            k = 2.0 * math.pi / (self.u(*wavelength) * self.s)
            amps.append(self.u(*amp))
            vecs.append(_v3(d * k))
            phs.append(self.u(0.0, 2.0 * math.pi))
        return Waves(tuple(amps), tuple(vecs), tuple(phs))

    def ell(
        self,
        center: Sequence[float],
        radii_mm: Sequence[float],
        rot: NDArray[np.float64] | None = None,
        var: float = 0.2,
        floor: float = 0.0,
        power: float = 2.0,
        scaled: bool = True,
    ) -> Ellipsoid:
        """Ellipsoid; radii scaled by the case scale and U(1-var, 1+var) per axis, then floored
        to ``floor`` x the voxel spacing along each local axis (keeps small organs visible)."""
        rm = np.eye(3) if rot is None else rot
        r = np.asarray(radii_mm, dtype=np.float64) * (self.s if scaled else 1.0)
        r = r * self.rng.uniform(1.0 - var, 1.0 + var, 3)
        if floor > 0:
            along = np.sqrt(((rm * self.es[:, None]) ** 2).sum(axis=0))
            r = np.maximum(r, floor * along)
        return Ellipsoid(_v3(center), _v3(r), tuple(float(v) for v in rm.ravel()), power)

    def tube(
        self,
        pts: Sequence[Sequence[float]],
        radii_mm: Sequence[float],
        shift: NDArray[np.float64] | None = None,
        point_jit: float = 3.0,
        var: float = 0.15,
        floor: float = 0.0,
    ) -> Tube:
        base = np.asarray(pts, dtype=np.float64) * self.s
        if shift is not None:
            base = base + shift
        base = base + self.rng.uniform(-point_jit, point_jit, base.shape)
        g = self.u(1.0 - var, 1.0 + var)
        r = np.asarray(radii_mm, dtype=np.float64) * self.s * g
        r = r * self.rng.uniform(0.93, 1.07, len(r))
        if floor > 0:
            r = np.maximum(r, floor * float(max(self.es[0], self.es[1])))
        return Tube(tuple(_v3(p) for p in base), tuple(float(v) for v in r))


def _sample_grid(
    rng: np.random.Generator,
    size: int,
    z_lo: float,
    z_hi: float,
    body_half_x: float,
    body_cy: float,
    direction: str | tuple[float, ...] | None,
) -> Grid:
    if direction is None:
        direction = str(rng.choice(list(DIRECTIONS), p=_DIRECTION_P))
    dvec = DIRECTIONS[direction] if isinstance(direction, str) else tuple(direction)
    off = rng.uniform(-1.0, 1.0, 2) * np.array([12.0, 18.0])
    need = 2.0 * (body_half_x + abs(off[0])) + 12.0
    fov = 512.0 * float(rng.uniform(max(0.6, min(need / 512.0, 0.98)), 1.0))
    sxy = fov / size
    thickness = float(rng.uniform(1.0, 5.0))
    sz = thickness * max(1.0, 512.0 / size / 2.0)
    nz = max(2, int(math.ceil((z_hi - z_lo) / sz)))
    spacing = np.array([sxy, sxy, sz])
    n = np.array([size, size, nz], dtype=np.float64)
    centre = np.array([off[0], body_cy + off[1], 0.5 * (z_lo + z_hi)])
    dmat = np.asarray(dvec, dtype=np.float64).reshape(3, 3)
    origin = centre - (dmat * spacing[None, :]) @ ((n - 1.0) / 2.0)
    return Grid((nz, size, size), _v3(spacing), _v3(origin), tuple(float(v) for v in dvec))


_HU_RANGES: dict[int, tuple[float, float, float]] = {  # lo, hi, texture amplitude (HU)
    Tissue.AIR: (-1000.0, -1000.0, 0.0),
    Tissue.PAD: (-1024.0, -1024.0, 0.0),
    Tissue.SUBQ_FAT: (-112.0, -88.0, 6.0),
    Tissue.VISC_FAT: (-108.0, -82.0, 9.0),
    Tissue.MUSCLE: (40.0, 60.0, 5.0),
    Tissue.LUNG: (-880.0, -820.0, 25.0),
    Tissue.TABLE: (150.0, 400.0, 0.0),
    Tissue.RIB: (350.0, 750.0, 60.0),
    Tissue.CORTEX: (750.0, 1200.0, 80.0),
    Tissue.MARROW: (280.0, 450.0, 40.0),
    Tissue.DISC: (70.0, 110.0, 6.0),
    Tissue.CANAL: (5.0, 30.0, 3.0),
    Tissue.BOWEL_WALL: (35.0, 60.0, 6.0),
    Tissue.BOWEL_FLUID: (5.0, 35.0, 8.0),
    Tissue.COLON_CONTENT: (-120.0, 20.0, 60.0),
    Tissue.GAS: (-950.0, -870.0, 20.0),
    Tissue.BLADDER: (0.0, 15.0, 3.0),
    Tissue.ADRENAL: (30.0, 60.0, 4.0),
    Tissue.GALLBLADDER: (0.0, 25.0, 3.0),
    Tissue.ESOPHAGUS: (30.0, 50.0, 4.0),
    Tissue.STOMACH_CONTENT: (10.0, 35.0, 6.0),
    Tissue.DUODENUM_CONTENT: (20.0, 40.0, 6.0),
}
_ENHANCING: dict[int, tuple[float, float, float]] = {  # contrast-dependent, correlated per case
    Tissue.LIVER: (80.0, 130.0, 5.0),
    Tissue.SPLEEN: (90.0, 140.0, 5.0),
    Tissue.KIDNEY_CORTEX: (130.0, 200.0, 6.0),
    Tissue.PANCREAS: (70.0, 110.0, 8.0),
    Tissue.AORTA: (150.0, 280.0, 3.0),
    Tissue.IVC: (100.0, 180.0, 5.0),
    Tissue.VEIN: (110.0, 190.0, 5.0),
    Tissue.HEART: (100.0, 220.0, 8.0),
}


def _sample_hu(rng: np.random.Generator) -> tuple[list[float], list[float]]:
    hu = [0.0] * N_TISSUES
    tex = [0.0] * N_TISSUES
    for t, (lo, hi, amp) in _HU_RANGES.items():
        hu[t] = float(rng.uniform(lo, hi))
        tex[t] = amp
    phase = float(rng.uniform(0.0, 1.0))  # enhancement level of this scan
    for t, (lo, hi, amp) in _ENHANCING.items():
        f = float(np.clip(phase + rng.normal(0.0, 0.2), 0.0, 1.0))
        hu[t] = lo + (hi - lo) * f
        tex[t] = amp
    hu[Tissue.ARTERY] = hu[Tissue.AORTA]
    tex[Tissue.ARTERY] = 3.0
    hu[Tissue.KIDNEY_MEDULLA] = hu[Tissue.KIDNEY_CORTEX] - float(rng.uniform(0.0, 60.0))
    tex[Tissue.KIDNEY_MEDULLA] = 6.0
    hu[Tissue.STOMACH_WALL] = hu[Tissue.STOMACH_CONTENT] + float(rng.uniform(15.0, 35.0))
    tex[Tissue.STOMACH_WALL] = 5.0
    hu[Tissue.DUODENUM_WALL] = hu[Tissue.DUODENUM_CONTENT] + float(rng.uniform(8.0, 20.0))
    tex[Tissue.DUODENUM_WALL] = 5.0
    return hu, tex


def sample_case_spec(
    rng: np.random.Generator,
    size: int = 96,
    n_tumors: int | None = None,
    z_extent: str | None = None,
    direction: str | tuple[float, ...] | None = None,
) -> CaseSpec:
    """Draw every random choice of one case.

    size: in-plane matrix (size x size); n_tumors: exact tumor count (0..MAX_TUMORS) or None for
    random 0-3; z_extent: one of :data:`Z_EXTENTS` or None (random); direction: a key of
    :data:`DIRECTIONS`, 9 direction floats, or None (random).
    """
    if n_tumors is not None and not 0 <= n_tumors <= MAX_TUMORS:
        raise ValueError(f"n_tumors must be in [0, {MAX_TUMORS}]")
    if z_extent is not None and z_extent not in Z_EXTENTS:
        raise ValueError(f"z_extent must be one of {Z_EXTENTS}")
    u = rng.uniform
    s = float(u(0.85, 1.15))
    ext = z_extent or str(rng.choice(Z_EXTENTS, p=_Z_EXTENT_P))
    z_lo = -(95.0 + float(u(0.0, 15.0))) * s
    z_hi = (115.0 + float(u(0.0, 15.0))) * s
    if "chest" in ext:
        z_hi = float(u(240.0, 300.0)) * s
    if "pelvis" in ext:
        z_lo = -float(u(215.0, 255.0)) * s

    # --- body frame -------------------------------------------------------------------------
    a0 = 165.0 * s * float(u(0.94, 1.06))
    b0 = 112.0 * s * float(u(0.92, 1.08))
    cy = 5.0 * s
    axes_mod = (
        float(u(0.0, 0.05)),
        float(u(0.004, 0.012)),
        float(u(0, 2 * math.pi)),
        float(u(0.0, 0.05)),
        float(u(0.004, 0.012)),
        float(u(0, 2 * math.pi)),
    )
    hip = float(u(0.0, 0.08))
    fat = float(u(6.0, 26.0)) * s
    muscle = float(u(7.0, 13.0)) * s
    grid = _sample_grid(rng, size, z_lo, z_hi, a0 * (1.0 + axes_mod[0] + hip), cy, direction)
    dmat = np.asarray(grid.direction).reshape(3, 3)
    es = np.abs(dmat) @ np.asarray(grid.spacing_xyz)  # voxel size along LPS x, y, z (mm)
    sp = _Sampler(rng, s, es)
    hu, tex = _sample_hu(rng)

    parts: list[Part] = []
    side = {"R": -1.0, "L": 1.0}

    # --- muscles ----------------------------------------------------------------------------
    y_ps = cy + b0 - fat - 20.0 * s
    for sd, sg in side.items():
        parts.append(
            Part(
                f"paraspinal_{sd}",
                0,
                Tissue.MUSCLE,
                (
                    sp.tube(
                        [(sg * 34, y_ps / s, -400), (sg * 34, y_ps / s, 400)],
                        [21, 21],
                        point_jit=2.0,
                    ),
                ),
                sp.waves(2, (0.03, 0.08), (60, 150)),
                hard=True,
            )
        )
        parts.append(
            Part(
                f"psoas_{sd}",
                0,
                Tissue.MUSCLE,
                (
                    sp.tube(
                        [
                            (sg * 28, 42, 28),
                            (sg * 40, 38, -40),
                            (sg * 52, 30, -110),
                            (sg * 62, 12, -185),
                            (sg * 72, 0, -260),
                        ],
                        [5, 14, 19, 20, 18],
                    ),
                ),
                sp.waves(2, (0.03, 0.08), (50, 120)),
                hard=True,
            )
        )
    # --- liver first (lung domes depend on it) ----------------------------------------------
    jl = sp.jit(10.0)
    liver_r = sp.ell(
        sp.pos((-70, -5, 60), jl), (65, 75, 70), _euler(rng, 8.0), power=float(u(2.0, 2.4))
    )
    liver_l = sp.ell(
        sp.pos((-8, -35, 75), jl + sp.jit(5.0)),
        (50, 30, 34),
        _euler(rng, 10.0) @ _axes_rot((0.1, 0.3, 1.0), (1.0, 0.0, -0.2)),
    )
    liver_top = liver_r.center[2] + 0.9 * liver_r.radii[2]
    js = sp.jit(10.0)
    spleen_c = sp.pos((88, 32, 55), js)
    spleen_rot = _euler(rng, 10.0) @ _axes_rot((-0.35, -0.75, -0.55), (0.8, 0.6, 0.0))
    spleen = sp.ell(spleen_c, (20, 36, 55), spleen_rot)
    jst = sp.jit(10.0)
    stomach = sp.tube(
        [(50, 0, 95), (60, -22, 68), (48, -48, 38), (20, -55, 22), (-8, -45, 25)],
        [30, 33, 27, 19, 12],
        shift=jst,
        point_jit=4.0,
    )
    left_top = max(
        spleen.center[2] + 0.7 * max(spleen.radii),
        max(p[2] + r for p, r in zip(stomach.points, stomach.radii, strict=True)),
    )

    spine_y = 52.0 * s
    frame = Frame(
        body_center=(0.0, cy),
        body_axes=(a0, b0),
        body_power=float(u(2.0, 2.6)),
        axes_mod=axes_mod,
        hip_widen=hip,
        pelvis_z=-150.0 * s,
        fat_mm=fat,
        muscle_mm=muscle,
        rib_period=float(u(26.0, 32.0)) * s,
        rib_phase=float(u(0.0, 30.0)),
        rib_width=float(u(8.0, 11.0)) * s,
        rib_slope=float(u(20.0, 32.0)) * s,
        rib_z_lo=float(u(-45.0, -25.0)) * s,
        costal_z=float(u(50.0, 80.0)) * s,
        sternum_z=float(u(120.0, 150.0)) * s,
        dome_right=(liver_r.center[0] * 0.75, liver_top),
        dome_left=(60.0 * s, left_top + 5.0 * s),
        dome_k=0.012 / s,
        dome_slope_y=0.3,
        mediastinum=(
            float(u(32.0, 42.0)) * s,
            0.5 * (spine_y + cy - b0),
            0.5 * (spine_y - cy + b0) + 5.0 * s,
        ),
        table_y=cy + b0 * (1.0 + axes_mod[3]) + float(u(2.0, 20.0)),
        table_mm=float(u(4, 8)),
        spine_y=spine_y,
        vb_axes=(24.0 * s * float(u(0.9, 1.1)), 18.0 * s * float(u(0.9, 1.1))),
        cortex_mm=float(u(2.0, 3.0)),
        canal_r=8.0 * s,
        arch_mm=6.0 * s,
        vert_period=float(u(28.0, 34.0)) * s,
        vert_phase=float(u(0.0, 34.0)),
        disc_frac=float(u(0.18, 0.26)),
        spine_z_lo=-130.0 * s,
        process_len=20.0 * s,
        transverse_half=38.0 * s,
    )
    # --- chest / pelvis soft tissue -----------------------------------------------------------
    for n, bronchus in enumerate(((-45, 15, 205), (45, 18, 200))):
        airway = sp.tube([(0, 5, 420), (0, 8, 245), bronchus], [9, 8.5, 6], point_jit=2.0)
        parts.append(
            Part(
                f"airway_{n}", 0, Tissue.BOWEL_WALL, (airway,), inner_tissue=Tissue.GAS, inner_q=0.7
            )
        )
    parts.append(
        Part(
            "heart",
            0,
            Tissue.HEART,
            (sp.ell((10 * s, -25 * s, liver_top + 55 * s), (62, 50, 55), _euler(rng, 10.0)),),
            sp.waves(2, (0.03, 0.08), (80, 160)),
        )
    )
    # --- bones --------------------------------------------------------------------------------
    parts.append(Part("spine", 0, Tissue.CORTEX, kind="spine"))
    bones: list[Ellipsoid] = [
        sp.ell(sp.pos((0, 78, -175)), (42, 18, 48), _axes_rot((0, -0.45, 1), (1, 0, 0)), 0.1),
    ]
    for sg in side.values():
        bones.append(
            sp.ell(
                sp.pos((sg * 82, 22, -150)),
                (9, 62, 42),
                _axes_rot((0, 0, 1), (-107.0, -sg * 70.0, 0)),
                0.1,
            )
        )
        bones.append(sp.ell(sp.pos((sg * 88, -8, -235)), (24, 24, 24), None, 0.08))
        bones.append(
            sp.ell(
                sp.pos((sg * 28, -62, -250)),
                (28, 11, 13),
                _axes_rot((0, 0, 1), (1, -sg * 0.45, 0)),
                0.1,
            )
        )
        bones.append(sp.ell(sp.pos((sg * 55, 20, -250)), (12, 25, 25), None, 0.1))
    for n, b in enumerate(bones):
        parts.append(
            Part(
                f"bone_{n}",
                0,
                Tissue.CORTEX,
                (b,),
                sp.waves(2, (0.02, 0.06), (40, 100)),
                inner_tissue=Tissue.MARROW,
                inner_q=0.45,
                hard=True,
            )
        )
    # --- bowel (unlabelled) -------------------------------------------------------------------
    n_loops = int(rng.integers(14, 27))
    for n in range(n_loops):
        start = np.array([u(-75, 75), u(-72, 12), u(-200, 15)])
        pts = [start]
        for _ in range(int(rng.integers(2, 5))):
            step = _unit(rng.normal(size=3)) * u(25.0, 40.0)
            nxt = np.clip(pts[-1] + step, [-90, -75, -215], [90, 20, 20])
            pts.append(nxt)
        r = u(9.0, 14.0)
        collapsed = rng.uniform() < 0.3
        gas_y = (
            float(np.mean([p[1] for p in pts])) * s - u(0.2, 0.8) * r * s
            if rng.uniform() < 0.35
            else -math.inf
        )
        parts.append(
            Part(
                f"bowel_{n}",
                0,
                Tissue.BOWEL_WALL,
                (sp.tube(pts, [r] * len(pts), point_jit=2.0),),
                sp.waves(2, (0.04, 0.12), (30, 70)),
                inner_tissue=Tissue.BOWEL_FLUID,
                inner_q=0.0 if collapsed else (1.0 - 3.0 / r) ** 2,
                gas_y=gas_y,
            )
        )
    colon_pts = [
        (-85, -10, -110),
        (-95, 5, -40),
        (-95, 0, 15),
        (-82, -38, 5),
        (-40, -62, 0),
        (30, -64, 10),
        (85, -25, 45),
        (95, 15, 0),
        (90, 15, -90),
        (55, -15, -160),
        (10, -5, -185),
        (0, 55, -210),
        (0, 62, -270),
    ]
    colon = sp.tube(colon_pts, [25, 23, 22, 21, 21, 20, 20, 19, 18, 18, 18, 20, 18], point_jit=5)
    parts.append(
        Part(
            "colon",
            0,
            Tissue.BOWEL_WALL,
            (colon,),
            sp.waves(3, (0.04, 0.12), (30, 80)),
            inner_tissue=Tissue.COLON_CONTENT,
            inner_q=0.78,
            gas_y=cy - u(0.0, 60.0) * s,
        )
    )
    parts.append(
        Part(
            "bladder",
            0,
            Tissue.BOWEL_WALL,
            (sp.ell(sp.pos((0, -45, -215), sp.jit(8)), (45, 38, 35), None, 0.3),),
            sp.waves(2, (0.02, 0.06), (60, 120)),
            inner_tissue=Tissue.BLADDER,
            inner_q=0.85,
        )
    )
    # --- unlabelled vessels -------------------------------------------------------------------
    aorta_pts = [
        (13, 20, -95),
        (12, 20, 0),
        (14, 22, 70),
        (24, 28, 150),
        (24, 30, 220),
        (5, 8, 262),
        (-12, -22, 245),
        (-8, -30, 200),
        (-2, -22, 175),
    ]
    ivc_pts = [
        (-22, 16, -125),
        (-24, 14, -40),
        (-27, 10, 40),
        (-30, 6, 90),
        (-25, 0, 125),
        (-18, -5, 150),
    ]
    for sd, sg in side.items():
        parts.append(
            Part(
                f"iliac_artery_{sd}",
                0,
                Tissue.ARTERY,
                (sp.tube([(13, 20, -95), (sg * 45, 8, -170), (sg * 75, -15, -240)], [7, 6.5, 6]),),
                hard=False,
            )
        )
        parts.append(
            Part(
                f"iliac_vein_{sd}",
                0,
                Tissue.VEIN,
                (
                    sp.tube(
                        [(-22, 16, -125), (sg * 42, 18, -172), (sg * 70, -5, -240)], [8, 8, 7.5]
                    ),
                ),
            )
        )
    jp = sp.jit(8.0)
    parts.append(
        Part(
            "portal_splenic_vein",
            0,
            Tissue.VEIN,
            (
                sp.tube(
                    [(78, 32, 40), (30, 12, 14), (0, 6, 5), (-30, 0, 30), (-55, -5, 50)],
                    [5, 6, 8, 8, 7],
                    shift=jp,
                ),
            ),
        )
    )
    # --- labelled organs (paint order = ORGAN_IDS) ----------------------------------------------
    organ_parts: dict[int, list[Part]] = {}
    # intrahepatic portal / hepatic vein branches: labelled liver, enhancing like veins
    lrot = _rot_matrix(liver_r.rot)
    hilum = np.asarray(liver_r.center) + np.array([25.0, 5.0, -12.0]) * s
    ivc_top = np.array([-28.0, 6.0, 100.0]) * s
    branches: list[Tube] = []
    for root, n_br, r0 in ((hilum, 4, 6.0), (ivc_top, 3, 5.0)):
        for _ in range(n_br):
            d = _unit(rng.normal(size=3) + (0.0, 0.0, 0.5 if r0 < 6.0 else 0.0))
            mid = np.asarray(liver_r.center) + lrot @ (np.asarray(liver_r.radii) * d * 0.4)
            end = np.asarray(liver_r.center) + lrot @ (np.asarray(liver_r.radii) * d * 0.85)
            branches.append(
                Tube((_v3(root), _v3(mid), _v3(end)), (r0 * s, 0.6 * r0 * s, 0.35 * r0 * s))
            )
    organ_parts[1] = [
        Part("liver", 1, Tissue.LIVER, (liver_r, liver_l), sp.waves(3, (0.04, 0.10), (80, 200))),
        Part(
            "liver_vessels",
            1,
            Tissue.VEIN,
            tuple(branches),
            sp.waves(2, (0.05, 0.15), (20, 40)),
            confine="liver",
            confine_q=0.8,
        ),
    ]
    notch = Ellipsoid(
        _v3(np.asarray(spleen.center) - _rot_matrix(spleen.rot)[:, 0] * spleen.radii[0] * 1.1),
        _v3(np.asarray(spleen.radii) * np.array([0.55, 0.45, 0.5])),
        spleen.rot,
    )
    organ_parts[3] = [
        Part(
            "spleen",
            3,
            Tissue.SPLEEN,
            (spleen,),
            sp.waves(3, (0.04, 0.10), (60, 150)),
            notches=(notch,),
        )
    ]
    wall = u(3.0, 5.0) * s
    r_mean = float(np.mean(stomach.radii))
    organ_parts[11] = [
        Part(
            "stomach",
            11,
            Tissue.STOMACH_WALL,
            (stomach,),
            sp.waves(3, (0.04, 0.10), (50, 120)),
            inner_tissue=Tissue.STOMACH_CONTENT,
            inner_q=(1.0 - wall / r_mean) ** 2,
            gas_y=(float(np.mean([p[1] for p in stomach.points])) - u(0.0, 0.8) * r_mean)
            if rng.uniform() < 0.7
            else -math.inf,
        )
    ]
    pancreas = sp.tube(
        [(-30, -8, -5), (-5, -12, 5), (20, -8, 15), (50, 10, 28), (72, 25, 38)],
        [15, 11, 11, 10, 8],
        shift=jp,
        floor=0.6,
    )
    organ_parts[4] = [
        Part("pancreas", 4, Tissue.PANCREAS, (pancreas,), sp.waves(4, (0.05, 0.14), (15, 35)))
    ]
    duo = sp.tube(
        [
            (-8, -45, 25),
            (-32, -30, 22),
            (-47, -12, 10),
            (-52, 0, -15),
            (-45, 8, -40),
            (-20, -5, -52),
            (10, -8, -50),
            (28, 0, -30),
            (28, -8, -12),
        ],
        [12] * 9,
        shift=jp,
        floor=0.6,
    )
    duo = Tube((_v3(np.asarray(stomach.points[-1])),) + duo.points[1:], duo.radii)
    r_duo = float(np.mean(duo.radii))
    organ_parts[12] = [
        Part(
            "duodenum",
            12,
            Tissue.DUODENUM_WALL,
            (duo,),
            sp.waves(3, (0.04, 0.10), (30, 60)),
            inner_tissue=Tissue.DUODENUM_CONTENT,
            inner_q=(1.0 - min(3.5, 0.4 * r_duo) / r_duo) ** 2,
            gas_y=(float(np.mean([p[1] for p in duo.points])) - u(0.3, 0.9) * r_duo)
            if rng.uniform() < 0.3
            else -math.inf,
        )
    ]
    kidneys: dict[str, Ellipsoid] = {}
    for sd, lab, canon in (("R", 2, (-65, 45, -20)), ("L", 13, (65, 45, -5))):
        sg = side[sd]
        rot = _euler(rng, 8.0) @ _axes_rot((-sg * 0.25, 0.15, 1.0), (-sg * 0.7, -0.7, 0.0))
        kid = sp.ell(sp.pos(canon, sp.jit(10.0)), (27, 20, 55), rot, 0.15)
        kidneys[sd] = kid
        kn = Ellipsoid(
            _v3(np.asarray(kid.center) + rot[:, 0] * kid.radii[0] * 0.95),
            _v3(np.asarray(kid.radii) * np.array([0.42, 0.5, 0.33])),
            kid.rot,
        )
        organ_parts[lab] = [
            Part(
                f"kidney_{sd}",
                lab,
                Tissue.KIDNEY_CORTEX,
                (kid,),
                sp.waves(3, (0.03, 0.07), (50, 120)),
                inner_tissue=Tissue.KIDNEY_MEDULLA,
                inner_q=0.42,
                notches=(kn,),
            )
        ]
    gb_rot = _euler(rng, 10.0) @ _axes_rot((0.2, 0.6, 1.0), (1.0, 0.0, 0.0))
    organ_parts[9] = [
        Part(
            "gallbladder",
            9,
            Tissue.GALLBLADDER,
            (
                sp.ell(
                    sp.pos((-45, -45, 15), 0.7 * jl + sp.jit(4.0)),
                    (14, 14, 33),
                    gb_rot,
                    0.2,
                    floor=0.75,
                ),
            ),
            sp.waves(2, (0.02, 0.06), (40, 90)),
        )
    ]
    for sd, lab, off in (("R", 7, (23, -5, 58)), ("L", 8, (-22, -12, 35))):
        sg = side[sd]
        kc = np.asarray(kidneys[sd].center)
        c = kc + np.asarray(off) * s + sp.jit(3.0)
        c[0] = sg * max(sg * c[0], 38.0 * s)  # keep clear of the spine / psoas / crus
        c[1] = min(c[1], 44.0 * s)
        limb_a = sp.ell(
            c, (4, 11, 17), _euler(rng, 8) @ _axes_rot((0, 0.3, 1), (1, sg, 0)), 0.15, floor=0.75
        )
        c2 = c + np.array([sg * 5.0, 6.0, -6.0]) * s
        limb_b = sp.ell(
            c2, (4, 10, 13), _euler(rng, 8) @ _axes_rot((0, -0.3, 1), (1, -sg, 0)), 0.15, floor=0.75
        )
        organ_parts[lab] = [
            Part(
                f"adrenal_{sd}",
                lab,
                Tissue.ADRENAL,
                (limb_a, limb_b),
                sp.waves(2, (0.02, 0.05), (20, 40)),
            )
        ]
    eso_end = np.asarray(stomach.points[0]) + np.array([-20.0, -5.0, -17.0]) * s
    eso = sp.tube(
        [(0, 22, 340), (2, 22, 200), (8, 18, 130), (18, 0, 95)],
        [9, 9, 9, 9],
        point_jit=2.0,
        floor=0.7,
    )
    eso = Tube(eso.points + (_v3(eso_end),), eso.radii + (eso.radii[-1],))
    organ_parts[10] = [
        Part("esophagus", 10, Tissue.ESOPHAGUS, (eso,), sp.waves(2, (0.03, 0.08), (30, 60)))
    ]
    jv = sp.jit(3.0) * np.array([1.0, 1.0, 0.0])
    ivc = sp.tube(ivc_pts, [10, 11, 12, 12.5, 13, 14], shift=jv, point_jit=2.0, floor=0.7)
    organ_parts[6] = [Part("ivc", 6, Tissue.IVC, (ivc,), sp.waves(2, (0.03, 0.08), (40, 90)))]
    aorta = sp.tube(
        aorta_pts, [10, 11.5, 12.5, 13, 13.5, 15, 15.5, 15, 15], shift=jv, point_jit=2.0, floor=0.7
    )
    organ_parts[5] = [
        Part("aorta", 5, Tissue.AORTA, (aorta,), sp.waves(2, (0.02, 0.05), (60, 120)))
    ]
    for lab in ORGAN_IDS:
        parts.extend(organ_parts[lab])

    # --- tumors -------------------------------------------------------------------------------
    if n_tumors is None:
        n_tumors = int(rng.choice(4, p=[0.25, 0.4, 0.2, 0.15]))
    host_part = {
        1: organ_parts[1][0],
        2: organ_parts[2][0],
        13: organ_parts[13][0],
        4: organ_parts[4][0],
        11: organ_parts[11][0],
    }
    r_min = max(5.0, 0.8 * float(es.max()))
    hosts: list[int] = []
    p_host = np.array(_HOST_WEIGHTS + (1.0 - sum(_HOST_WEIGHTS),))
    for n in range(n_tumors):
        choice = int(rng.choice(len(p_host), p=p_host / p_host.sum()))
        host = TUMOR_HOSTS[choice] if choice < len(TUMOR_HOSTS) else 0
        hosts.append(host)
        r_t = u(5.0, 25.0)
        if host == 0:  # para-aortic node, left/left-anterior of the aorta
            r_t = max(r_min, u(6.0, 14.0))
            i_seg = int(rng.integers(0, 2))
            a_p, b_p = np.asarray(aorta.points[i_seg]), np.asarray(aorta.points[i_seg + 1])
            on = a_p + u(0.2, 0.8) * (b_p - a_p)
            ang = u(-0.8, 0.1)
            off = np.array([math.cos(ang), math.sin(ang), 0.0])
            centre = on + off * (aorta.radii[i_seg] + r_t + 2.0)
            host_hu = hu[Tissue.MUSCLE] + u(-10.0, 15.0)
            confine = ""
        else:
            hp = host_part[host]
            shape = hp.shapes[0] if host != 1 else hp.shapes[int(rng.uniform() < 0.2)]
            if isinstance(shape, Ellipsoid):
                rot = _rot_matrix(shape.rot)
                v = _unit(rng.normal(size=3)) * u(0.0, 0.55)
                centre = np.asarray(shape.center) + rot @ (np.asarray(shape.radii) * v)
                cap = 0.7 * min(shape.radii)
            else:
                i_seg = int(rng.integers(0, len(shape.points) - 1))
                a_p, b_p = np.asarray(shape.points[i_seg]), np.asarray(shape.points[i_seg + 1])
                t = u(0.0, 1.0)
                r_here = shape.radii[i_seg] + t * (shape.radii[i_seg + 1] - shape.radii[i_seg])
                centre = a_p + t * (b_p - a_p) + _unit(rng.normal(size=3)) * u(0, 0.4) * r_here
                cap = 1.1 * r_here
            r_t = max(r_min, min(r_t, cap))
            base = {
                1: Tissue.LIVER,
                2: Tissue.KIDNEY_CORTEX,
                13: Tissue.KIDNEY_CORTEX,
                4: Tissue.PANCREAS,
                11: Tissue.STOMACH_WALL,
            }[host]
            sign = -1.0 if rng.uniform() < 0.7 else 1.0
            host_hu = hu[base] + sign * u(20.0, 60.0)
            confine = hp.name
        rim = int(Tissue.TUMOR0) + 2 * n
        hu[rim] = host_hu
        tex[rim] = 10.0
        necrotic = r_t > 15.0 and rng.uniform() < 0.5
        hu[rim + 1] = host_hu - u(15.0, 40.0)
        tex[rim + 1] = 12.0
        t_ell = sp.ell(centre, (r_t, r_t, r_t), _euler(rng, 180.0), 0.2, scaled=False)
        t_waves = sp.waves(4, (0.04, 0.12), (1.0 * r_t / s, 2.5 * r_t / s))
        parts.append(
            Part(
                f"tumor_{n}",
                TUMOR_ID,
                rim,
                (t_ell,),
                t_waves,
                inner_tissue=rim + 1 if necrotic else -1,
                inner_q=0.3 if necrotic else 0.0,
                confine=confine,
                confine_q=1.2,
                keep_labels=tuple(k for k in (5, 6, 7, 8, 9, 10) if k != host),
            )
        )

    return CaseSpec(
        grid=grid,
        scale=s,
        z_extent=ext,
        z_range=(z_lo, z_hi),
        frame=frame,
        parts=tuple(parts),
        hu=tuple(hu),
        texture=tuple(tex),
        noise_sigma=float(u(8.0, 25.0)),
        blur_sigma_zyx=(float(u(0.5, 0.8)), float(u(0.5, 0.8)), float(u(0.5, 0.8))),
        texture_cell_mm=float(u(6.0, 10.0)),
        pad_circle=bool(rng.uniform() < 0.3),
        tumor_hosts=tuple(hosts),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
