"""FLARE-like synthetic abdominal CT phantom: spec types, geometry and rendering core.

This module holds the case description types (:class:`CaseSpec`, :class:`Frame`, :class:`Part`,
:class:`Ellipsoid`, :class:`Tube`, :class:`Waves`, :class:`Grid`, :class:`Tissue`), the shared
constants (label paint order, tumor hosts, z extents, directions), the geometry helpers and the
deterministic rendering (:func:`render_layers`, :func:`render_case`). The random anatomy itself
is drawn by :func:`flarecli.core.synth.anatomy.sample_case_spec`, which builds on this module.

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
