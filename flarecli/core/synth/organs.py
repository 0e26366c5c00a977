"""The 13 labelled organs, by region: the upper abdomen (liver, spleen, stomach, gallbladder,
esophagus), then the retroperitoneum (pancreas and duodenum along the portal vein, kidneys and
adrenals); the great vessels come from :mod:`flarecli.core.synth.vessels`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import Ellipsoid, Part, Tissue, Tube, _rot_matrix
from flarecli.core.synth.sampling import (
    _SIDE,
    _axes_rot,
    _euler,
    _hollow_organ,
    _Sampler,
    _unit,
    _v3,
)
from flarecli.core.synth.vessels import _sample_ivc_aorta


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
    wall_mm = sp.rng.uniform(3.0, 5.0) * sp.s
    return [_hollow_organ(sp, "stomach", 11, Tissue.STOMACH_WALL, Tissue.STOMACH_CONTENT,
                          stomach, sp.waves(3, (0.04, 0.10), (50, 120)), wall_mm,
                          p_gas=0.7, depth=(0.0, 0.8))]


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
    return [_hollow_organ(sp, "duodenum", 12, Tissue.DUODENUM_WALL, Tissue.DUODENUM_CONTENT,
                          duo, sp.waves(3, (0.04, 0.10), (30, 60)), min(3.5, 0.4 * r_duo),
                          p_gas=0.3, depth=(0.3, 0.9))]


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
