"""Painting a case's label map and tissue map (:func:`render_layers`): the frame over the
whole volume, then every part in painting order (later parts win), the spine from the frame,
and the reconstruction circle. Deterministic given the spec, whatever the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import CaseSpec, Frame, Grid, Part, Tissue
from flarecli.core.synth.shapes import (
    BArr,
    FArr,
    Waves,
    _box_from_aabb,
    _box_shape,
    _chunks,
    _coords,
    _items_q,
    _run_parallel,
    _shape_items,
    _slices,
    _union,
)

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
