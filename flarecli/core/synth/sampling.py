"""The tools every anatomy sampler draws with: :class:`_Sampler` (the case's scale, jitter,
coverage floors and deformation waves, all from the case's Generator), rotations, and the
hollow organs' wall, content and gas level."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import Ellipsoid, Part, Tube, Vec3, Waves

_SIDE: dict[str, float] = {"R": -1.0, "L": 1.0}  # sign of patient x (LPS) of each body side


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


def _gas_level(rng: np.random.Generator, centre_y: float, radius: float, p_gas: float,
               depth: tuple[float, float], scale: float = 1.0) -> float:
    """The y (LPS mm) anterior of which a hollow organ's content is gas (gas rises towards the
    anterior wall of a supine patient): with probability ``p_gas``, ``depth`` (uniform, in
    units of ``radius * scale``) anterior of the centre line; otherwise no gas (-inf). Draws
    the chance, then the depth only when there is gas."""
    if rng.uniform() < p_gas:
        return centre_y - rng.uniform(*depth) * radius * scale
    return -math.inf


def _hollow_organ(sp: _Sampler, name: str, label: int, wall: int, content: int, tube: Tube,
                  waves: Waves, wall_mm: float, p_gas: float, depth: tuple[float, float]
                  ) -> Part:
    """A hollow organ along ``tube``: a wall of ``wall_mm`` of tissue ``wall`` around its
    ``content``, and a gas level (:func:`_gas_level`, in units of its mean radius)."""
    r_mean = float(np.mean(tube.radii))
    centre_y = float(np.mean([p[1] for p in tube.points]))
    return Part(name, label, wall, (tube,), waves, inner_tissue=content,
                inner_q=(1.0 - wall_mm / r_mean) ** 2,
                gas_y=_gas_level(sp.rng, centre_y, r_mean, p_gas, depth))
