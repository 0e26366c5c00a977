"""The vessels: unlabelled iliac arteries and veins and the portal-splenic vein, and the
labelled IVC (6) and aorta (5)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import Part, Tissue, Tube
from flarecli.core.synth.sampling import _SIDE, _Sampler


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
