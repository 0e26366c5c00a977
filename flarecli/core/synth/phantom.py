"""FLARE-like synthetic abdominal CT phantom: rendering a case to CT.

The case description types live in :mod:`flarecli.core.synth.case`, the random anatomy is drawn
by :func:`flarecli.core.synth.anatomy.sample_case_spec`, the shapes are evaluated by
:mod:`flarecli.core.synth.shapes` and painted by :mod:`flarecli.core.synth.paint`; this module
turns the painted tissue map into CT (:func:`render_case`).

Anatomy is defined once, in a canonical patient frame in millimetres (ITK/LPS: +x patient left,
+y posterior, +z superior), by a :class:`CaseSpec` that holds every random choice of one case.
:func:`render_case` samples that anatomy onto the case's voxel grid through the grid's physical
coordinates, so the same anatomy appears for every direction / spacing / origin.

Rendering pipeline (all deterministic given the spec):

1. *frame*: body outline (skin/subcutaneous fat, muscle wall, visceral fat), ribs, lungs,
   CT table -- evaluated over the whole volume in z-chunks;
2. *parts* in painting order (later parts win): muscles, bones, bowel, unlabelled vessels,
   the 13 labelled organs (:data:`ORGAN_IDS`), then tumors (label 14). Every part is a union of
   deformed superellipsoids and tubes along polylines, evaluated only inside its index-space
   bounding box;
3. *intensity*: tissue -> HU lookup (per-case values), smooth intra-tissue texture, correlated
   Gaussian noise, partial-volume Gaussian blur; int16 output clipped to [-1024, 3071].

Arrays are numpy arrays in (z, y, x) = (k, j, i) order; physical point of element [k, j, i] is
``origin + D @ (spacing_xyz * (i, j, k))``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from flarecli.core.synth.case import CaseSpec, Tissue
from flarecli.core.synth.paint import render_layers
from flarecli.core.synth.shapes import _CHUNK_VOXELS, F32, FArr, _run_parallel


def _lin_weights(n: int, spacing: float, cell: float) -> tuple[NDArray[np.intp], FArr, int]:
    u = np.arange(n, dtype=np.float64) * (spacing / cell)
    i0 = np.floor(u).astype(np.intp)
    return i0, (u - i0).astype(F32), int(i0.max()) + 2 if n else 2


def _kernel_norm(sigma: float, truncate: float) -> float:
    """sqrt(sum w^2) of scipy's 1-D Gaussian kernel (noise std reduction factor)."""
    if sigma <= 0:
        return 1.0
    rad = int(truncate * sigma + 0.5)
    xs = np.arange(-rad, rad + 1, dtype=np.float64)
    w = np.exp(-0.5 * (xs / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt((w * w).sum()))


#: The voxel (mm^3) a case's ``noise_sigma`` is given for: a FLARE scan's 0.8 x 0.8 x 2.5 mm.
NOISE_REFERENCE_VOXEL_MM3 = 0.8 * 0.8 * 2.5


def noise_at(sigma_hu: float, spacing_xyz) -> float:
    """The noise std (HU) of a voxel of ``spacing_xyz``, for ``sigma_hu`` at the reference
    voxel: quantum noise averages down with the square root of the voxel volume, so a phantom
    on a coarse grid (the demo's 96 x 96 slices, ~4 x 4 x 6 mm voxels) is as noisy as a real
    scan resampled to that grid (about a tenth of the native noise), not as a native slice.
    Never more than ``sigma_hu``."""
    volume = float(np.prod(spacing_xyz))
    return sigma_hu * min(1.0, float(np.sqrt(NOISE_REFERENCE_VOXEL_MM3 / volume)))


def _render_image(
    spec: CaseSpec, tissue: NDArray[np.uint8], threads: int | None = None
) -> NDArray[np.int16]:
    """HU image (int16, shape of ``tissue``) from the tissue map, processed in z-slabs."""
    nz, ny, nx = tissue.shape
    sx, sy, sz = spec.grid.spacing_xyz
    hu_lut = np.zeros(256, dtype=F32)
    tex_lut = np.zeros(256, dtype=F32)
    hu_lut[: len(spec.hu)] = spec.hu
    tex_lut[: len(spec.texture)] = spec.texture
    # smooth texture field: coarse Gaussian noise on a ~cell mm lattice, trilinear upsampling
    cell = spec.texture_cell_mm
    xi, xw, cxn = _lin_weights(nx, sx, cell)
    yi, yw, cyn = _lin_weights(ny, sy, cell)
    zi, zw, czn = _lin_weights(nz, sz, cell)
    trng = np.random.default_rng((spec.seed, 1))
    coarse = trng.standard_normal((czn, cyn, cxn), dtype=F32)
    coarse = ndimage.gaussian_filter(coarse, 0.6, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    cx_ = coarse[:, :, xi] * (1.0 - xw) + coarse[:, :, xi + 1] * xw
    cxy = cx_[:, yi, :] * (1.0 - yw)[None, :, None] + cx_[:, yi + 1, :] * yw[None, :, None]
    del cx_, coarse
    truncate = 3.0
    sig = spec.blur_sigma_zyx
    halo = max(int(truncate * s + 0.5) for s in sig) + 1
    norm = _kernel_norm(sig[0], truncate) * _kernel_norm(sig[1], truncate)
    norm *= _kernel_norm(sig[2], truncate)
    pre_sigma = noise_at(spec.noise_sigma, (sx, sy, sz)) / norm
    out = np.empty((nz, ny, nx), dtype=np.int16)

    def slab_job(k0: int, k1: int) -> None:
        a0, a1 = max(0, k0 - halo), min(nz, k1 + halo)
        t = tissue[a0:a1]
        hu = hu_lut[t]
        w = zw[a0:a1][:, None, None]
        tex = cxy[zi[a0:a1]] * (1.0 - w)
        tex += cxy[zi[a0:a1] + 1] * w
        tex *= tex_lut[t]
        hu += tex
        del tex
        for k in range(a0, a1):  # per-slice seeds: identical noise whatever the slab layout
            nrng = np.random.default_rng((spec.seed, 2, k))
            hu[k - a0] += nrng.standard_normal((ny, nx), dtype=F32) * pre_sigma
        hu = ndimage.gaussian_filter(hu, sig, mode="nearest", truncate=truncate)
        core = hu[k0 - a0 : k1 - a0]
        core[t[k0 - a0 : k1 - a0] == Tissue.PAD] = -1024.0
        np.clip(core, -1024.0, 3071.0, out=core)
        np.rint(core, out=core)
        out[k0:k1] = core

    slab = max(8, (2 * _CHUNK_VOXELS) // max(ny * nx, 1))
    jobs = [(k0, min(nz, k0 + slab)) for k0 in range(0, nz, slab)]
    _run_parallel(slab_job, jobs, threads)
    return out


def render_case(
    spec: CaseSpec, threads: int | None = None
) -> tuple[NDArray[np.int16], NDArray[np.uint8]]:
    """Render one case: (image int16 HU, label uint8), both of shape ``spec.grid.shape_zyx``.

    Bit-identical for the same spec whatever ``threads`` is (None: min(4, cpu count)).
    """
    label, tissue = render_layers(spec, threads)
    image = _render_image(spec, tissue, threads)
    return image, label
