"""The unlabelled body of a case: its extent and outline, the frame (ribs, diaphragm domes,
table, spine), muscles, chest soft tissue, bones, bowel, colon and bladder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flarecli.core.synth.case import _Z_EXTENT_P, Z_EXTENTS, Ellipsoid, Frame, Part, Tissue
from flarecli.core.synth.organs import _UpperAbdomen
from flarecli.core.synth.sampling import _SIDE, _axes_rot, _euler, _gas_level, _Sampler, _unit


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
        gas_y = _gas_level(rng, float(np.mean([p[1] for p in pts])) * s, r, 0.35, (0.2, 0.8), s)
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
