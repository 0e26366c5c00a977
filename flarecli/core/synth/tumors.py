"""The tumors (label 14): in a host organ, or para-aortic nodes, with their rim and necrotic
core HU."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import (
    _HOST_WEIGHTS,
    TUMOR_HOSTS,
    TUMOR_ID,
    Ellipsoid,
    Part,
    Tissue,
    Tube,
    _rot_matrix,
)
from flarecli.core.synth.sampling import _euler, _Sampler, _unit

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
