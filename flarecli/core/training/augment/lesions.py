"""Synthetic lesions painted into a training sample (the recipe's ``augmentation.lesions``,
:class:`flarecli.core.recipes.spec.SyntheticLesions`).

A tumor stage trained on the few lesions of its annotated cases memorises them: it finds its
own training lesions at p 1.00 and no test lesion (measured on the demo, see
docs/benchmarks.md). Painting new lesions into the host organs of every sample gives it an
unbounded supply. As :mod:`.sample` / :mod:`.apply` do, all randomness is drawn first from
the ``numpy.random.Generator`` handed in (:func:`sample_lesions`, a fixed number of draws per
lesion), and painting is deterministic torch on the tensors' device (:func:`paint_lesions`).

Geometry: ``spacing_zyx`` is the sample's voxel size in mm, so diameters are physical; a
lesion is an ellipsoid whose normalised radius ``rho`` (1 on the outline) is lobulated by
two low harmonics of the in-plane angle. Its coverage of a voxel falls linearly from 1 to 0
over one in-plane voxel around the outline (partial volume), is cut to its organ (which it
fits inside with a margin, see :data:`HOST_MARGIN`), and
the intensity offset is the coverage times the contrast, so the host's texture and noise
stay. Voxels covered at least half become tumor (14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flarecli.core.labels import TUMOR

#: Relative amplitude of the outline's lobulation (two harmonics, each up to this much).
LOBULATION = 0.12
#: A lesion's centre lies up to this many radii off the centre voxel along z.
Z_OFFSET_RADII = 0.6
#: A lesion is shrunk until every voxel of the sample outside its organ lies at least this
#: many of its radii away (its lobulated outline reaches 1.24): its organ is seen all round
#: it. Uncapped, a lesion as wide as a kidney's cross-section replaced the whole section,
#: and the network learned to call every kidney slightly darker than another a lesion
#: (measured: 1,000-1,700 kidney voxels per test case painted tumor).
HOST_MARGIN = 1.4


@dataclass(frozen=True)
class LesionParams:
    """Everything drawn for one lesion: the host it lies in (``organ``: which of the hosts
    present in the sample, as a share of their number, so that a small kidney is as likely as
    a liver) and the voxel of it that it is centred on (``pick``, a share of its voxels), the
    sub-voxel and z offsets (mm), the radii (mm, zyx), the
    in-plane turn (rad), the lobulation's amplitudes and phases, the contrast (HU, signed)
    and the rim (its thickness as a share of the radius and its HU over the host, or 0)."""

    organ: float
    pick: float
    offset_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    turn: float
    lobes: tuple[float, float, float, float]
    contrast_hu: float
    rim_share: float
    rim_hu: float


def sample_lesions(rng: np.random.Generator, config) -> list[LesionParams]:
    """The lesions of one sample (none with probability ``1 - config.probability``).
    Draws one number for the decision, then the count and sixteen numbers per lesion."""
    if rng.uniform() >= config.probability:
        return []
    n = int(rng.integers(config.count[0], config.count[1] + 1))
    lo, hi = (math.log(v) for v in config.diameter_mm)
    out = []
    for _ in range(n):
        organ, pick, dz, dy, dx, log_d, ay, ax, turn, contrast, dark, rim = rng.uniform(size=12)
        radius = math.exp(lo + (hi - lo) * log_d) / 2
        a1, a2, p1, p2 = rng.uniform(size=4)
        sign = -1.0 if dark < config.darker else 1.0
        hu = config.contrast_hu[0] + (config.contrast_hu[1] - config.contrast_hu[0]) * contrast
        has_rim = 2 * radius >= 20.0 and sign < 0 and rim < config.rim
        out.append(LesionParams(
            organ=float(organ),
            pick=float(pick),
            offset_mm=(float((2 * dz - 1) * Z_OFFSET_RADII * radius), float(dy - 0.5),
                       float(dx - 0.5)),
            radii_mm=(radius, radius * (0.75 + 0.5 * float(ay)),
                      radius * (0.75 + 0.5 * float(ax))),
            turn=float(turn * math.pi),
            lobes=(float(a1 * LOBULATION), float(a2 * LOBULATION), float(p1 * 2 * math.pi),
                   float(p2 * 2 * math.pi)),
            contrast_hu=float(sign * hu),
            rim_share=float(0.1 + 0.1 * rim / config.rim) if has_rim else 0.0,
            rim_hu=float(hu) if has_rim else 0.0))
    return out


def paint_lesions(image, label, lesions: list[LesionParams], config, spacing_zyx,
                  unit_per_hu: float):
    """``(image (C, D, H, W), label (D, H, W))`` with ``lesions`` painted in (``config``: the
    :class:`~flarecli.core.recipes.spec.SyntheticLesions` they were drawn from); the inputs
    are not modified. A sample without a host voxel is returned as it came. A lesion is
    shrunk to keep :data:`HOST_MARGIN` from the host's border, and dropped when that leaves
    it under the smallest diameter. The offset is not clipped to the normalisation's window:
    organs lie well inside it."""
    import torch

    host = torch.isin(label, torch.as_tensor(list(config.hosts), device=label.device))
    if not lesions or not bool(host.any()):
        return image, label
    present = torch.unique(label[host])
    spacing = torch.as_tensor(spacing_zyx, dtype=torch.float32, device=image.device)
    axes = [torch.arange(n, dtype=torch.float32, device=image.device) * spacing[i]
            for i, n in enumerate(label.shape)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    offset = torch.zeros(label.shape, dtype=torch.float32, device=image.device)
    tumor = torch.zeros(label.shape, dtype=torch.bool, device=image.device)
    edge = float(spacing[1:].mean())  # partial volume over one in-plane voxel
    for p in lesions:
        organ = label == present[min(int(p.organ * len(present)), len(present) - 1)]
        where = torch.nonzero(organ)
        voxel = where[min(int(p.pick * len(where)), len(where) - 1)].float()
        centre = voxel * spacing + torch.as_tensor(p.offset_mm, device=image.device)
        z, y, x = zz - centre[0], yy - centre[1], xx - centre[2]
        u = math.cos(p.turn) * y + math.sin(p.turn) * x
        v = -math.sin(p.turn) * y + math.cos(p.turn) * x
        rz, ry, rx = p.radii_mm
        rho = torch.sqrt((z / rz) ** 2 + (u / ry) ** 2 + (v / rx) ** 2)
        angle = torch.atan2(v / rx, u / ry)
        shrink = 1.0 if bool(organ.all()) else float(rho[~organ].min()) / HOST_MARGIN
        if shrink < 1.0:
            if 2 * rz * shrink < config.diameter_mm[0]:
                continue
            rho, ry = rho / shrink, ry * shrink
        a1, a2, p1, p2 = p.lobes
        outline = 1 + a1 * torch.cos(2 * angle + p1) + a2 * torch.cos(3 * angle + p2)
        depth = (outline - rho) * ry  # mm inside the outline (approximately)
        cover = ((depth / edge) + 0.5).clamp(0, 1) * organ
        if p.rim_share > 0:
            inner = ((depth - p.rim_share * ry) / edge + 0.5).clamp(0, 1) * organ
            lesion_hu = p.contrast_hu * inner + p.rim_hu * (cover - inner)
        else:
            lesion_hu = p.contrast_hu * cover
        offset = torch.where(cover > 0, lesion_hu, offset)
        tumor |= cover >= 0.5
    painted = (image + offset * unit_per_hu).to(image.dtype)
    return painted, torch.where(tumor, torch.as_tensor(TUMOR, dtype=label.dtype,
                                                       device=label.device), label)
