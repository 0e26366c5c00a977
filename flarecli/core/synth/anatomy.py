"""FLARE-like synthetic abdominal CT phantom: anatomy sampling.

:func:`sample_case_spec` draws every random choice of one case into a
:class:`~flarecli.core.synth.phantom.CaseSpec` (the spec types and the rendering live in
:mod:`flarecli.core.synth.phantom`). It calls one sampler per anatomical region, in a fixed order:
extent and body size, grid, HU table, muscles, upper-abdomen shapes (liver / spleen / stomach),
the body :class:`~flarecli.core.synth.phantom.Frame`, chest soft tissue, bones, bowel, unlabelled
vessels, the labelled organs, tumors, then the scan parameters (noise, blur, texture, seed).

Every sampler draws from the case's numpy Generator, directly or through :class:`_Sampler`, so
the order of the calls (and of the draws inside each sampler) is part of the output: changing it
changes the case every seed produces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.phantom import (
    _DIRECTION_P,
    _HOST_WEIGHTS,
    _Z_EXTENT_P,
    DIRECTIONS,
    MAX_TUMORS,
    N_TISSUES,
    ORGAN_IDS,
    TUMOR_HOSTS,
    TUMOR_ID,
    Z_EXTENTS,
    CaseSpec,
    Ellipsoid,
    Frame,
    Grid,
    Part,
    Tissue,
    Tube,
    Vec3,
    Waves,
    _rot_matrix,
)

__all__ = ["sample_case_spec"]

_SIDE: dict[str, float] = {"R": -1.0, "L": 1.0}  # sign of patient x (LPS) of each body side


# ----------------------------------------------------------------------------------------------
# Sampling helpers
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


# ----------------------------------------------------------------------------------------------
# Region samplers (called by sample_case_spec in this order; each draws in a fixed order)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Body:
    """Extent and body size of one case: scale s, z extent / range (mm) and body outline (mm)."""

    s: float
    ext: str
    z_lo: float
    z_hi: float
    a0: float  # body half-axis along x
    b0: float  # body half-axis along y
    cy: float  # body centre y
    axes_mod: tuple[float, float, float, float, float, float]
    hip: float
    fat: float
    muscle: float

    @property
    def half_width(self) -> float:
        """Largest body half-width along x (mm), for the field of view."""
        return self.a0 * (1.0 + self.axes_mod[0] + self.hip)


@dataclass(frozen=True, eq=False)
class _UpperAbdomen:
    """Liver, spleen and stomach shapes, drawn before the frame (the lung domes rest on them)."""

    jl: NDArray[np.float64]  # liver jitter (mm), shared with the gallbladder
    liver_r: Ellipsoid
    liver_l: Ellipsoid
    spleen: Ellipsoid
    stomach: Tube

    @property
    def liver_top(self) -> float:
        """z (mm) of the top of the right liver lobe (right diaphragm dome)."""
        return self.liver_r.center[2] + 0.9 * self.liver_r.radii[2]

    @property
    def left_top(self) -> float:
        """z (mm) of the top of the spleen / stomach (left diaphragm dome)."""
        spleen, stomach = self.spleen, self.stomach
        return max(
            spleen.center[2] + 0.7 * max(spleen.radii),
            max(p[2] + r for p, r in zip(stomach.points, stomach.radii, strict=True)),
        )


def _sample_extent_and_body(rng: np.random.Generator, z_extent: str | None) -> _Body:
    """Draw the case scale, the z extent and range, and the body outline and layer sizes."""
    u = rng.uniform
    s = float(u(0.85, 1.15))
    ext = z_extent or str(rng.choice(Z_EXTENTS, p=_Z_EXTENT_P))
    z_lo = -(95.0 + float(u(0.0, 15.0))) * s
    z_hi = (115.0 + float(u(0.0, 15.0))) * s
    if "chest" in ext:
        z_hi = float(u(240.0, 300.0)) * s
    if "pelvis" in ext:
        z_lo = -float(u(215.0, 255.0)) * s
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
    return _Body(s, ext, z_lo, z_hi, a0, b0, cy, axes_mod, hip, fat, muscle)


def _sample_muscles(sp: _Sampler, body: _Body) -> list[Part]:
    """Draw the paraspinal and psoas muscles of both sides (unlabelled)."""
    s = sp.s
    parts: list[Part] = []
    y_ps = body.cy + body.b0 - body.fat - 20.0 * s
    for sd, sg in _SIDE.items():
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
    return parts


def _sample_upper_abdomen(sp: _Sampler) -> _UpperAbdomen:
    """Draw the shapes of the liver lobes, the spleen and the stomach."""
    rng, u = sp.rng, sp.rng.uniform
    jl = sp.jit(10.0)
    liver_r = sp.ell(
        sp.pos((-70, -5, 60), jl), (65, 75, 70), _euler(rng, 8.0), power=float(u(2.0, 2.4))
    )
    liver_l = sp.ell(
        sp.pos((-8, -35, 75), jl + sp.jit(5.0)),
        (50, 30, 34),
        _euler(rng, 10.0) @ _axes_rot((0.1, 0.3, 1.0), (1.0, 0.0, -0.2)),
    )
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
    return _UpperAbdomen(jl, liver_r, liver_l, spleen, stomach)


def _sample_frame(rng: np.random.Generator, body: _Body, upper: _UpperAbdomen) -> Frame:
    """Draw the body frame: outline, ribs, diaphragm domes, mediastinum, table, spine."""
    u = rng.uniform
    s, cy, b0, axes_mod = body.s, body.cy, body.b0, body.axes_mod
    spine_y = 52.0 * s
    return Frame(
        body_center=(0.0, cy),
        body_axes=(body.a0, b0),
        body_power=float(u(2.0, 2.6)),
        axes_mod=axes_mod,
        hip_widen=body.hip,
        pelvis_z=-150.0 * s,
        fat_mm=body.fat,
        muscle_mm=body.muscle,
        rib_period=float(u(26.0, 32.0)) * s,
        rib_phase=float(u(0.0, 30.0)),
        rib_width=float(u(8.0, 11.0)) * s,
        rib_slope=float(u(20.0, 32.0)) * s,
        rib_z_lo=float(u(-45.0, -25.0)) * s,
        costal_z=float(u(50.0, 80.0)) * s,
        sternum_z=float(u(120.0, 150.0)) * s,
        dome_right=(upper.liver_r.center[0] * 0.75, upper.liver_top),
        dome_left=(60.0 * s, upper.left_top + 5.0 * s),
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


def _sample_chest(sp: _Sampler, liver_top: float) -> list[Part]:
    """Draw the chest soft tissue: trachea / main bronchi and the heart (unlabelled)."""
    s = sp.s
    parts: list[Part] = []
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
            (sp.ell((10 * s, -25 * s, liver_top + 55 * s), (62, 50, 55), _euler(sp.rng, 10.0)),),
            sp.waves(2, (0.03, 0.08), (80, 160)),
        )
    )
    return parts


def _sample_bones(sp: _Sampler) -> list[Part]:
    """Draw the vertebral-column placeholder and the pelvic bone ellipsoids (unlabelled)."""
    parts = [Part("spine", 0, Tissue.CORTEX, kind="spine")]
    bones: list[Ellipsoid] = [
        sp.ell(sp.pos((0, 78, -175)), (42, 18, 48), _axes_rot((0, -0.45, 1), (1, 0, 0)), 0.1),
    ]
    for sg in _SIDE.values():
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
    return parts


def _sample_bowel_loops(sp: _Sampler) -> list[Part]:
    """Draw the small-bowel loops: random-walk tubes, some collapsed, some with gas (unlabelled)."""
    rng, u, s = sp.rng, sp.rng.uniform, sp.s
    parts: list[Part] = []
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
    return parts


def _sample_colon_and_bladder(sp: _Sampler, cy: float) -> list[Part]:
    """Draw the colon (with content and gas) and the urinary bladder (unlabelled)."""
    u, s = sp.rng.uniform, sp.s
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
    return [
        Part(
            "colon",
            0,
            Tissue.BOWEL_WALL,
            (colon,),
            sp.waves(3, (0.04, 0.12), (30, 80)),
            inner_tissue=Tissue.COLON_CONTENT,
            inner_q=0.78,
            gas_y=cy - u(0.0, 60.0) * s,
        ),
        Part(
            "bladder",
            0,
            Tissue.BOWEL_WALL,
            (sp.ell(sp.pos((0, -45, -215), sp.jit(8)), (45, 38, 35), None, 0.3),),
            sp.waves(2, (0.02, 0.06), (60, 120)),
            inner_tissue=Tissue.BLADDER,
            inner_q=0.85,
        ),
    ]


def _sample_vessels(sp: _Sampler) -> tuple[list[Part], NDArray[np.float64]]:
    """Draw the iliac arteries / veins and the portal-splenic vein; also returns its shift."""
    parts: list[Part] = []
    for sd, sg in _SIDE.items():
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
    return parts, jp  # jp (mm) also shifts the pancreas and the duodenum


def _sample_liver(sp: _Sampler, upper: _UpperAbdomen) -> list[Part]:
    """Draw the liver (label 1) and its intrahepatic portal / hepatic vein branches."""
    rng, s = sp.rng, sp.s
    liver_r = upper.liver_r
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
    return [
        Part(
            "liver",
            1,
            Tissue.LIVER,
            (liver_r, upper.liver_l),
            sp.waves(3, (0.04, 0.10), (80, 200)),
        ),
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


def _sample_spleen(sp: _Sampler, spleen: Ellipsoid) -> list[Part]:
    """Draw the spleen's deformation (label 3); its hilum notch follows from the shape."""
    notch = Ellipsoid(
        _v3(np.asarray(spleen.center) - _rot_matrix(spleen.rot)[:, 0] * spleen.radii[0] * 1.1),
        _v3(np.asarray(spleen.radii) * np.array([0.55, 0.45, 0.5])),
        spleen.rot,
    )
    return [
        Part(
            "spleen",
            3,
            Tissue.SPLEEN,
            (spleen,),
            sp.waves(3, (0.04, 0.10), (60, 150)),
            notches=(notch,),
        )
    ]


def _sample_stomach(sp: _Sampler, stomach: Tube) -> list[Part]:
    """Draw the stomach's wall thickness, deformation and gas level (label 11)."""
    rng, u, s = sp.rng, sp.rng.uniform, sp.s
    wall = u(3.0, 5.0) * s
    r_mean = float(np.mean(stomach.radii))
    return [
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


def _sample_pancreas(sp: _Sampler, jp: NDArray[np.float64]) -> list[Part]:
    """Draw the pancreas (label 4) along the portal / splenic vein."""
    pancreas = sp.tube(
        [(-30, -8, -5), (-5, -12, 5), (20, -8, 15), (50, 10, 28), (72, 25, 38)],
        [15, 11, 11, 10, 8],
        shift=jp,
        floor=0.6,
    )
    return [Part("pancreas", 4, Tissue.PANCREAS, (pancreas,), sp.waves(4, (0.05, 0.14), (15, 35)))]


def _sample_duodenum(sp: _Sampler, jp: NDArray[np.float64], stomach: Tube) -> list[Part]:
    """Draw the duodenum (label 12), starting at the stomach outlet."""
    rng, u = sp.rng, sp.rng.uniform
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
    return [
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


def _sample_kidneys(sp: _Sampler) -> tuple[dict[int, list[Part]], dict[str, Ellipsoid]]:
    """Draw both kidneys (labels 2 and 13); also returns their shapes keyed by side."""
    parts: dict[int, list[Part]] = {}
    kidneys: dict[str, Ellipsoid] = {}
    for sd, lab, canon in (("R", 2, (-65, 45, -20)), ("L", 13, (65, 45, -5))):
        sg = _SIDE[sd]
        rot = _euler(sp.rng, 8.0) @ _axes_rot((-sg * 0.25, 0.15, 1.0), (-sg * 0.7, -0.7, 0.0))
        kid = sp.ell(sp.pos(canon, sp.jit(10.0)), (27, 20, 55), rot, 0.15)
        kidneys[sd] = kid
        kn = Ellipsoid(
            _v3(np.asarray(kid.center) + rot[:, 0] * kid.radii[0] * 0.95),
            _v3(np.asarray(kid.radii) * np.array([0.42, 0.5, 0.33])),
            kid.rot,
        )
        parts[lab] = [
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
    return parts, kidneys


def _sample_gallbladder(sp: _Sampler, jl: NDArray[np.float64]) -> list[Part]:
    """Draw the gallbladder (label 9) under the liver, following the liver jitter ``jl``."""
    gb_rot = _euler(sp.rng, 10.0) @ _axes_rot((0.2, 0.6, 1.0), (1.0, 0.0, 0.0))
    return [
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


def _sample_adrenals(sp: _Sampler, kidneys: dict[str, Ellipsoid]) -> dict[int, list[Part]]:
    """Draw both adrenal glands (labels 7 and 8), two limbs each, above their kidneys."""
    rng, s = sp.rng, sp.s
    parts: dict[int, list[Part]] = {}
    for sd, lab, off in (("R", 7, (23, -5, 58)), ("L", 8, (-22, -12, 35))):
        sg = _SIDE[sd]
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
        parts[lab] = [
            Part(
                f"adrenal_{sd}",
                lab,
                Tissue.ADRENAL,
                (limb_a, limb_b),
                sp.waves(2, (0.02, 0.05), (20, 40)),
            )
        ]
    return parts


def _sample_esophagus(sp: _Sampler, stomach: Tube) -> list[Part]:
    """Draw the esophagus (label 10), ending at the stomach's cardia."""
    eso_end = np.asarray(stomach.points[0]) + np.array([-20.0, -5.0, -17.0]) * sp.s
    eso = sp.tube(
        [(0, 22, 340), (2, 22, 200), (8, 18, 130), (18, 0, 95)],
        [9, 9, 9, 9],
        point_jit=2.0,
        floor=0.7,
    )
    eso = Tube(eso.points + (_v3(eso_end),), eso.radii + (eso.radii[-1],))
    return [Part("esophagus", 10, Tissue.ESOPHAGUS, (eso,), sp.waves(2, (0.03, 0.08), (30, 60)))]


def _sample_ivc_aorta(sp: _Sampler) -> tuple[dict[int, list[Part]], Tube]:
    """Draw the IVC (label 6) and the aorta (label 5); also returns the aorta's tube."""
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
    jv = sp.jit(3.0) * np.array([1.0, 1.0, 0.0])
    ivc = sp.tube(ivc_pts, [10, 11, 12, 12.5, 13, 14], shift=jv, point_jit=2.0, floor=0.7)
    parts = {6: [Part("ivc", 6, Tissue.IVC, (ivc,), sp.waves(2, (0.03, 0.08), (40, 90)))]}
    aorta = sp.tube(
        aorta_pts, [10, 11.5, 12.5, 13, 13.5, 15, 15.5, 15, 15], shift=jv, point_jit=2.0, floor=0.7
    )
    parts[5] = [Part("aorta", 5, Tissue.AORTA, (aorta,), sp.waves(2, (0.02, 0.05), (60, 120)))]
    return parts, aorta


def _sample_organs(
    sp: _Sampler, upper: _UpperAbdomen, jp: NDArray[np.float64]
) -> tuple[dict[int, list[Part]], Tube]:
    """Draw the 13 labelled organs, keyed by label; also returns the aorta's tube."""
    # draw order (not paint order): liver, spleen, stomach, pancreas, duodenum, kidneys,
    # gallbladder, adrenals, esophagus, IVC, aorta
    organs = {1: _sample_liver(sp, upper)}
    organs[3] = _sample_spleen(sp, upper.spleen)
    organs[11] = _sample_stomach(sp, upper.stomach)
    organs[4] = _sample_pancreas(sp, jp)
    organs[12] = _sample_duodenum(sp, jp, upper.stomach)
    kidney_parts, kidneys = _sample_kidneys(sp)
    organs.update(kidney_parts)
    organs[9] = _sample_gallbladder(sp, upper.jl)
    organs.update(_sample_adrenals(sp, kidneys))
    organs[10] = _sample_esophagus(sp, upper.stomach)
    vessel_parts, aorta = _sample_ivc_aorta(sp)
    organs.update(vessel_parts)
    return organs, aorta


_TUMOR_BASE: dict[int, int] = {  # tissue whose HU a tumor's rim HU is offset from, by host
    1: Tissue.LIVER,
    2: Tissue.KIDNEY_CORTEX,
    13: Tissue.KIDNEY_CORTEX,
    4: Tissue.PANCREAS,
    11: Tissue.STOMACH_WALL,
}


def _sample_tumor_site(
    sp: _Sampler,
    host: int,
    host_part: Part | None,
    aorta: Tube,
    r_min: float,
    hu: list[float],
) -> tuple[NDArray[np.float64], float, float, str]:
    """Draw one tumor's centre, radius (mm), rim HU and confining part (no host: aortic node)."""
    rng, u = sp.rng, sp.rng.uniform
    r_t = u(5.0, 25.0)
    if host_part is None:  # para-aortic node, left/left-anterior of the aorta
        r_t = max(r_min, u(6.0, 14.0))
        i_seg = int(rng.integers(0, 2))
        a_p, b_p = np.asarray(aorta.points[i_seg]), np.asarray(aorta.points[i_seg + 1])
        on = a_p + u(0.2, 0.8) * (b_p - a_p)
        ang = u(-0.8, 0.1)
        off = np.array([math.cos(ang), math.sin(ang), 0.0])
        centre = on + off * (aorta.radii[i_seg] + r_t + 2.0)
        return centre, r_t, hu[Tissue.MUSCLE] + u(-10.0, 15.0), ""
    shape = host_part.shapes[0] if host != 1 else host_part.shapes[int(rng.uniform() < 0.2)]
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
    sign = -1.0 if rng.uniform() < 0.7 else 1.0
    host_hu = hu[_TUMOR_BASE[host]] + sign * u(20.0, 60.0)
    return centre, r_t, host_hu, host_part.name


def _sample_tumors(
    sp: _Sampler,
    n_tumors: int | None,
    organs: dict[int, list[Part]],
    aorta: Tube,
    hu: list[float],
    tex: list[float],
) -> tuple[list[Part], list[int]]:
    """Draw the tumors (label 14) and their HU into ``hu`` / ``tex``: (parts, host labels)."""
    rng, u, s = sp.rng, sp.rng.uniform, sp.s
    if n_tumors is None:
        n_tumors = int(rng.choice(4, p=[0.25, 0.4, 0.2, 0.15]))
    r_min = max(5.0, 0.8 * float(sp.es.max()))
    parts: list[Part] = []
    hosts: list[int] = []
    p_host = np.array(_HOST_WEIGHTS + (1.0 - sum(_HOST_WEIGHTS),))
    for n in range(n_tumors):
        choice = int(rng.choice(len(p_host), p=p_host / p_host.sum()))
        host = TUMOR_HOSTS[choice] if choice < len(TUMOR_HOSTS) else 0
        hosts.append(host)
        host_part = organs[host][0] if host != 0 else None
        centre, r_t, host_hu, confine = _sample_tumor_site(sp, host, host_part, aorta, r_min, hu)
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
    return parts, hosts


# ----------------------------------------------------------------------------------------------
# Case
# ----------------------------------------------------------------------------------------------
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
    # the call order below is the draw order: keep it
    body = _sample_extent_and_body(rng, z_extent)
    grid = _sample_grid(rng, size, body.z_lo, body.z_hi, body.half_width, body.cy, direction)
    dmat = np.asarray(grid.direction).reshape(3, 3)
    es = np.abs(dmat) @ np.asarray(grid.spacing_xyz)  # voxel size along LPS x, y, z (mm)
    sp = _Sampler(rng, body.s, es)
    hu, tex = _sample_hu(rng)
    parts = _sample_muscles(sp, body)
    upper = _sample_upper_abdomen(sp)
    frame = _sample_frame(rng, body, upper)
    parts += _sample_chest(sp, upper.liver_top)
    parts += _sample_bones(sp)
    parts += _sample_bowel_loops(sp)
    parts += _sample_colon_and_bladder(sp, body.cy)
    vessel_parts, jp = _sample_vessels(sp)
    parts += vessel_parts
    organs, aorta = _sample_organs(sp, upper, jp)
    for lab in ORGAN_IDS:  # paint order
        parts.extend(organs[lab])
    tumor_parts, hosts = _sample_tumors(sp, n_tumors, organs, aorta, hu, tex)
    parts += tumor_parts

    return CaseSpec(
        grid=grid,
        scale=body.s,
        z_extent=body.ext,
        z_range=(body.z_lo, body.z_hi),
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
