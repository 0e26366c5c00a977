"""FLARE-like synthetic abdominal CT phantom: anatomy sampling.

:func:`sample_case_spec` draws every random choice of one case into a
:class:`~flarecli.core.synth.case.CaseSpec` (rendered by :mod:`flarecli.core.synth.phantom`).
It calls one sampler per region, in a fixed order: extent and body size, the scan's grid and HU
table (:mod:`.scan`), muscles, upper-abdomen shapes (liver / spleen / stomach), the body
:class:`~flarecli.core.synth.case.Frame`, chest soft tissue, bones, bowel (:mod:`.body`),
unlabelled vessels (:mod:`.vessels`), the labelled organs (:mod:`.organs`), tumors
(:mod:`.tumors`), then the scan parameters (noise, blur, texture, seed).

Every sampler draws from the case's numpy Generator, directly or through
:class:`~flarecli.core.synth.sampling._Sampler`, so the order of the calls (and of the draws
inside each sampler) is part of the output: changing it changes the case every seed produces
(``tests/core/synth/test_checksum.py`` pins it).
"""

from __future__ import annotations

import numpy as np

from flarecli.core.synth.body import (
    _sample_bones,
    _sample_bowel_loops,
    _sample_chest,
    _sample_colon_and_bladder,
    _sample_extent_and_body,
    _sample_frame,
    _sample_muscles,
)
from flarecli.core.synth.case import MAX_TUMORS, ORGAN_IDS, Z_EXTENTS, CaseSpec
from flarecli.core.synth.organs import _sample_organs, _sample_upper_abdomen
from flarecli.core.synth.sampling import _Sampler
from flarecli.core.synth.scan import _sample_grid, _sample_hu
from flarecli.core.synth.tumors import _sample_tumors
from flarecli.core.synth.vessels import _sample_vessels

__all__ = ["sample_case_spec"]


def sample_case_spec(
    rng: np.random.Generator,
    size: int = 96,
    n_tumors: int | None = None,
    z_extent: str | None = None,
    direction: str | tuple[float, ...] | None = None,
) -> CaseSpec:
    """Draw every random choice of one case.

    size: in-plane matrix (size x size); n_tumors: exact tumor count (0..MAX_TUMORS) or None for
    random 0-4 (:data:`TUMOR_COUNT_P`); z_extent: one of :data:`Z_EXTENTS` or None (random);
    direction: a key of :data:`DIRECTIONS`, 9 direction floats, or None (random).
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
