"""The scan of a case: its voxel grid (field of view, slice thickness, direction) and its
tissue HU table (per-case values, enhancing tissues correlated through one contrast phase)."""

from __future__ import annotations

import math

import numpy as np

from flarecli.core.synth.case import _DIRECTION_P, DIRECTIONS, N_TISSUES, Grid, Tissue
from flarecli.core.synth.sampling import _v3


def z_coarsening(size: int) -> float:
    """How much thicker than a native 1-5 mm slice a phantom of ``size`` x ``size`` slices is:
    a quarter of the in-plane coarsening (512 / size), at least 1. At the demo's 96 the slices
    are 1.3-6.7 mm, so a 1 cm lesion spans two or more slices (half the in-plane factor gave
    2.7-13 mm, where small lesions fell between slices)."""
    return max(1.0, 512.0 / size / 4.0)


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
    sz = thickness * z_coarsening(size)
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
    # late portal-venous / nephrographic kidneys: the medulla within 20 HU of the cortex (a
    # 0-60 HU gap put it in the very range of a hypo-attenuating kidney lesion)
    hu[Tissue.KIDNEY_MEDULLA] = hu[Tissue.KIDNEY_CORTEX] - float(rng.uniform(0.0, 20.0))
    tex[Tissue.KIDNEY_MEDULLA] = 6.0
    hu[Tissue.STOMACH_WALL] = hu[Tissue.STOMACH_CONTENT] + float(rng.uniform(15.0, 35.0))
    tex[Tissue.STOMACH_WALL] = 5.0
    hu[Tissue.DUODENUM_WALL] = hu[Tissue.DUODENUM_CONTENT] + float(rng.uniform(8.0, 20.0))
    tex[Tissue.DUODENUM_WALL] = 5.0
    return hu, tex
