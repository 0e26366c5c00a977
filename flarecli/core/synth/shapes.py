"""Evaluating a case's shapes on its voxel grid: index-space boxes, the physical coordinates
of their voxels, and the implicit value of a union of ellipsoids and tube segments (with its
deformation waves) -- evaluated only inside each shape's box, in chunks along k, in threads.

A :data:`KjiBox` is ``(k0, k1, j0, j1, i0, i1)``: half-open index ranges in array order
(z, y, x), flat, unlike :data:`flarecli.core.preprocessing.boxes.Box`'s (start, stop) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import numpy as np
from numpy.typing import NDArray

from flarecli.core.runtime import usable_cpus
from flarecli.core.synth.case import Ellipsoid, Grid, Tube, Waves, _rot_matrix

F32 = np.float32
KjiBox = tuple[int, int, int, int, int, int]  # k0, k1, j0, j1, i0, i1 (half-open, z y x)
FArr = NDArray[np.float32]
BArr = NDArray[np.bool_]

_CHUNK_VOXELS = 1 << 22  # voxels per evaluation chunk (bounds temporaries to ~16 MB each)


def _grid_matrix(grid: Grid) -> NDArray[np.float64]:
    """3x3 matrix whose columns are the LPS displacement (mm) of one step along i, j, k."""
    d = np.asarray(grid.direction, dtype=np.float64).reshape(3, 3)
    return d * np.asarray(grid.spacing_xyz, dtype=np.float64)[None, :]


def index_to_physical(grid: Grid, kji: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map array indices ``kji`` (N, 3) in (k, j, i) order to LPS points (N, 3) in mm."""
    ijk = np.asarray(kji, dtype=np.float64)[:, ::-1]
    return np.asarray(grid.origin_xyz, dtype=np.float64) + ijk @ _grid_matrix(grid).T


def _box_from_aabb(grid: Grid, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> KjiBox | None:
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


def _intersect(a: KjiBox, b: KjiBox) -> KjiBox | None:
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


def _union(boxes: Sequence[KjiBox]) -> KjiBox:
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
        min(b[4] for b in boxes),
        max(b[5] for b in boxes),
    )


def _slices(box: KjiBox, rel: KjiBox | None = None) -> tuple[slice, slice, slice]:
    """Slices of ``box``; relative to the origin of ``rel`` when given."""
    o = (0, 0, 0) if rel is None else (rel[0], rel[2], rel[4])
    return (
        slice(box[0] - o[0], box[1] - o[0]),
        slice(box[2] - o[1], box[3] - o[1]),
        slice(box[4] - o[2], box[5] - o[2]),
    )


def _box_shape(box: KjiBox) -> tuple[int, int, int]:
    return (box[1] - box[0], box[3] - box[2], box[5] - box[4])


def _chunks(box: KjiBox, max_voxels: int | None = None) -> Iterator[KjiBox]:
    """Split ``box`` along k into pieces of at most ``max_voxels`` voxels (at least 1 slice)."""
    if max_voxels is None:
        max_voxels = _CHUNK_VOXELS
    per_slice = (box[3] - box[2]) * (box[5] - box[4])
    step = max(1, max_voxels // max(per_slice, 1))
    for k0 in range(box[0], box[1], step):
        yield (k0, min(box[1], k0 + step), box[2], box[3], box[4], box[5])


def _coords(grid: Grid, box: KjiBox) -> tuple[FArr, FArr, FArr]:
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
_Item = tuple[str, object, KjiBox]


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


def _items_q(items: Sequence[_Item], waves: Waves, grid: Grid, box: KjiBox) -> FArr:
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
