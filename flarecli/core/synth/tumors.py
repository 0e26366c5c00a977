"""The tumors (label 14): in a host organ, or para-aortic nodes touching the aorta; sizes,
contrast to the host, rims and necrotic cores drawn to match FLARE's pan-cancer lesions."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from flarecli.core.synth.case import (
    _HOST_WEIGHTS,
    TUMOR_COUNT_P,
    TUMOR_HOSTS,
    TUMOR_ID,
    Ellipsoid,
    Part,
    Tissue,
    Tube,
    _rot_matrix,
)
from flarecli.core.synth.sampling import _euler, _Sampler, _unit

_TUMOR_BASE: dict[int, int] = {  # tissue whose HU a tumor's HU is offset from, by host
    1: Tissue.LIVER,
    2: Tissue.KIDNEY_CORTEX,
    13: Tissue.KIDNEY_CORTEX,
    4: Tissue.PANCREAS,
    11: Tissue.STOMACH_WALL,
    0: Tissue.MUSCLE,  # a lymph node: soft tissue beside the aorta
}
#: Lesion diameters (mm) by host (0: a para-aortic lymph node), drawn log-uniform: FLARE's
#: pan-cancer lesions run from about 5 mm to 8 cm, liver and kidney masses the largest.
TUMOR_DIAMETER_MM: dict[int, tuple[float, float]] = {
    1: (5.0, 80.0), 2: (10.0, 70.0), 13: (10.0, 70.0), 4: (10.0, 40.0), 11: (10.0, 50.0),
    0: (8.0, 30.0),
}
#: Chance that a lesion is darker than its host tissue, by host: most liver, kidney and
#: pancreatic lesions are hypo-attenuating in portal-venous CT (a hyper-attenuating kidney
#: lesion would look like the enhancing cortex), a gastric mass is solid tissue that enhances
#: above the wall and the fluid it pushes into.
TUMOR_HYPO_P: dict[int, float] = {1: 0.7, 2: 0.85, 13: 0.85, 4: 0.9, 11: 0.0, 0: 1.0}
#: Share of lesions of at least 20 mm with a thin enhancing rim around a darker body.
TUMOR_RIM_P = 0.35


def _sample_tumor_site(
    sp: _Sampler,
    host: int,
    host_part: Part | None,
    aorta: Tube,
    r_min: float,
) -> tuple[NDArray[np.float64], float, str]:
    """Draw one tumor's centre and radius (mm) and its confining part (no host: aortic node).

    The radius comes from :data:`TUMOR_DIAMETER_MM` (log-uniform), at least ``r_min`` (the
    voxel size keeps a lesion visible) and at most what the host's shape holds."""
    rng, u = sp.rng, sp.rng.uniform
    lo, hi = TUMOR_DIAMETER_MM[host]
    r_t = max(r_min, 0.5 * math.exp(u(math.log(lo), math.log(hi))))
    if host_part is None:  # para-aortic node, left/left-anterior of the aorta, touching it
        i_seg = int(rng.integers(0, 2))
        a_p, b_p = np.asarray(aorta.points[i_seg]), np.asarray(aorta.points[i_seg + 1])
        on = a_p + u(0.2, 0.8) * (b_p - a_p)
        ang = u(-0.8, 0.1)
        off = np.array([math.cos(ang), math.sin(ang), 0.0])
        centre = on + off * (aorta.radii[i_seg] + r_t + 1.0)
        return centre, r_t, ""
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
    return centre, max(r_min, min(r_t, cap)), host_part.name


def _tumor_hu(sp: _Sampler, host: int, r_t: float, hu: list[float], tex: list[float],
              rim: int) -> tuple[int, float]:
    """Set the HU of one tumor's two tissues (``rim`` and ``rim + 1``); returns the inner
    tissue (-1: none) and the q below which it is painted.

    The body is 20-60 HU from its host (darker with :data:`TUMOR_HYPO_P`); a lesion of 20 mm or
    more has, with :data:`TUMOR_RIM_P`, a thin enhancing rim (20-60 HU above the host, a tenth
    to a fifth of the radius: the body fills q < 0.65-0.8, q the squared normalised radius)
    around a body at least 20 HU darker than the host; else a lesion over 30 mm has a necrotic
    core (15-40 HU below the body) in half of the cases."""
    rng, u = sp.rng, sp.rng.uniform
    base = hu[_TUMOR_BASE[host]]
    sign = -1.0 if rng.uniform() < TUMOR_HYPO_P[host] else 1.0
    body = base + sign * u(20.0, 60.0)
    if host == 0:  # a node: soft tissue, 10-30 HU off the muscle beside it
        body = base + u(-30.0, -10.0)
    tex[rim] = tex[rim + 1] = 10.0
    if r_t >= 10.0 and rng.uniform() < TUMOR_RIM_P:  # a rim of about a tenth of the radius
        hu[rim] = base + u(20.0, 60.0)
        hu[rim + 1] = min(body, base - 20.0)
        return rim + 1, u(0.65, 0.8)
    hu[rim] = body
    hu[rim + 1] = body - u(15.0, 40.0)
    if r_t > 15.0 and rng.uniform() < 0.5:
        return rim + 1, 0.3
    return -1, 0.0


def _sample_tumors(
    sp: _Sampler,
    n_tumors: int | None,
    organs: dict[int, list[Part]],
    aorta: Tube,
    hu: list[float],
    tex: list[float],
) -> tuple[list[Part], list[int]]:
    """Draw the tumors (label 14) and their HU into ``hu`` / ``tex``: (parts, host labels)."""
    rng, s = sp.rng, sp.s
    if n_tumors is None:
        n_tumors = int(rng.choice(5, p=TUMOR_COUNT_P))
    r_min = max(4.0, 0.6 * float(sp.es.max()))
    parts: list[Part] = []
    hosts: list[int] = []
    p_host = np.array(_HOST_WEIGHTS + (1.0 - sum(_HOST_WEIGHTS),))
    for n in range(n_tumors):
        choice = int(rng.choice(len(p_host), p=p_host / p_host.sum()))
        host = TUMOR_HOSTS[choice] if choice < len(TUMOR_HOSTS) else 0
        hosts.append(host)
        host_part = organs[host][0] if host != 0 else None
        centre, r_t, confine = _sample_tumor_site(sp, host, host_part, aorta, r_min)
        rim = int(Tissue.TUMOR0) + 2 * n
        inner, inner_q = _tumor_hu(sp, host, r_t, hu, tex, rim)
        t_ell = sp.ell(centre, (r_t, r_t, r_t), _euler(rng, 180.0), 0.2, scaled=False)
        t_waves = sp.waves(4, (0.04, 0.12), (1.0 * r_t / s, 2.5 * r_t / s))
        parts.append(
            Part(
                f"tumor_{n}",
                TUMOR_ID,
                rim,
                (t_ell,),
                t_waves,
                inner_tissue=inner,
                inner_q=inner_q,
                confine=confine,
                confine_q=1.2,
                keep_labels=tuple(k for k in (5, 6, 7, 8, 9, 10) if k != host),
            )
        )
    return parts, hosts


# ----------------------------------------------------------------------------------------------
# Case
# ----------------------------------------------------------------------------------------------
