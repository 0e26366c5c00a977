"""Spatial transforms: rotation, scaling and elastic deformation composed into one sampling
grid and resampled once (flips folded into the grid, or done exactly with ``torch.flip``)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from flarecli.core.training.augment.filters import gaussian_smooth
from flarecli.core.training.augment.params import AugmentParams, ElasticParams, Interpolation, Vec3

_ELASTIC_NODE_SPACING = 3.0  # elastic control-grid spacing, in units of sigma: nodes every sigma/3


def _rotation_matrix(angles_rad: Vec3) -> np.ndarray:
    """3x3 rotation matrix acting on ``(z, y, x)`` column vectors: ``Rz @ Ry @ Rx``."""
    az, ay, ax = angles_rad
    cz, sz = math.cos(az), math.sin(az)
    cy, sy = math.cos(ay), math.sin(ay)
    cx, sx = math.cos(ax), math.sin(ax)
    # rotation about z acts in the (y, x) plane, about y in (z, x), about x in (z, y)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]], dtype=np.float64)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=np.float64)
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]], dtype=np.float64)
    return rz @ ry @ rx


def _voxel_matrix(params: AugmentParams) -> np.ndarray:
    """Linear map from output to input voxel offsets (about the centre), ``(z, y, x)`` order.

    ``q - c = S^-1 R diag(scale) S (p - c)`` with ``S = diag(spacing)``: offsets are converted
    to physical units, scaled, rotated and converted back to voxels.
    """
    mat = np.eye(3)
    if params.scale is not None:
        mat = np.diag(params.scale) @ mat
    if params.rotation_rad is not None:
        mat = _rotation_matrix(params.rotation_rad) @ mat
    spacing = np.asarray(params.spacing_zyx, dtype=np.float64)
    return np.diag(1.0 / spacing) @ mat @ np.diag(spacing)


def _output_coords(n: int, flip: bool, device: torch.device) -> torch.Tensor:
    """Normalised output coordinates (align_corners=True) of ``n`` voxels, reversed if flipped."""
    if n == 1:
        return torch.zeros(1, dtype=torch.float32, device=device)
    c = torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device)
    return c.flip(0) if flip else c


def _elastic_coarse(
    elastic: ElasticParams,
    coarse: tuple[int, int, int],
    shape: tuple[int, int, int],
    half: np.ndarray,
    device: torch.device,
) -> torch.Tensor:
    """Displacement on the coarse control grid, ``(3, d, h, w)`` float32, normalised units.

    White noise on the ``coarse`` nodes (spanning the full volume ``shape``) is smoothed with
    the Gaussian sigma converted to node units (no padding: the noise is drawn with a margin),
    scaled so that its RMS (over all nodes and
    components) equals ``magnitude_vox`` voxels, and converted to normalised ``grid_sample``
    units per axis.  Components in ``(z, y, x)`` order.
    """
    sigma_nodes = [
        elastic.sigma_vox * (m - 1) / max(n - 1, 1) for m, n in zip(coarse, shape, strict=True)
    ]
    # draw noise on a margin of one kernel radius and smooth without padding: the field is
    # statistically stationary (no inflated displacements at the volume border)
    margins = [
        max(1, math.ceil(3.0 * s)) if m > 1 else 0 for s, m in zip(sigma_nodes, coarse, strict=True)
    ]
    padded = tuple(m + 2 * r for m, r in zip(coarse, margins, strict=True))
    gen = torch.Generator(device=device)
    gen.manual_seed(elastic.seed)
    noise = torch.randn((3, *padded), generator=gen, device=device, dtype=torch.float32)
    smooth = gaussian_smooth(
        noise, [s if m > 1 else 0.0 for s, m in zip(sigma_nodes, coarse, strict=True)], valid=True
    )
    rms = smooth.square().mean().sqrt().clamp_min(1e-12)
    # axes of size 1 (2-D volumes) are never displaced along themselves
    inv_half = np.where(np.asarray(shape) > 1, 1.0 / half, 0.0)
    to_norm = torch.as_tensor(inv_half, dtype=torch.float32, device=device).view(3, 1, 1, 1)
    return smooth * (elastic.magnitude_vox / rms) * to_norm


def _sampling_grid(params: AugmentParams, device: torch.device) -> torch.Tensor:
    """``grid_sample`` grid ``(1, D, H, W, 3)`` float32 (normalised x, y, z, align_corners=True).

    Output voxel ``p`` samples input voxel ``q = c + M (f(p) - c) + u(f(p))`` with ``c`` the
    volume centre, ``M`` from :func:`_voxel_matrix`, ``u`` the elastic displacement and ``f``
    the flips (so the flips cost nothing extra).  Affine only: the grid is built by
    broadcasting.  With elastic: the full map (affine + displacement) is built on a coarse
    control grid with nodes every ``sigma / 3`` voxels and upsampled trilinearly (exact for the
    affine part).
    """
    shape = params.shape_zyx
    half = np.array([max(n - 1, 1) / 2.0 for n in shape])  # voxel <-> normalised scale
    # in normalised coordinates q_n = T p_n with T = H^-1 M H
    theta = np.diag(1.0 / half) @ _voxel_matrix(params) @ np.diag(half)
    theta[[n == 1 for n in shape], :] = 0.0  # a size-1 axis always samples its only slice
    # grid_sample wants the last dim as (x, y, z): reverse the rows of T
    cols = torch.as_tensor(theta[::-1].T.copy(), dtype=torch.float32, device=device)  # (3 in, 3)
    flips = set(params.flip_axes)
    if params.elastic is None:
        z, y, x = (_output_coords(n, a in flips, device) for a, n in enumerate(shape))
        zy = z.view(-1, 1, 1, 1) * cols[0] + y.view(1, -1, 1, 1) * cols[1]
        return (zy + x.view(1, 1, -1, 1) * cols[2])[None]
    factor = max(1.0, params.elastic.sigma_vox / _ELASTIC_NODE_SPACING)
    coarse = tuple(min(n, max(2, math.ceil((n - 1) / factor) + 1)) for n in shape)
    z, y, x = (_output_coords(n, False, device) for n in coarse)
    zy = z.view(-1, 1, 1, 1) * cols[0] + y.view(1, -1, 1, 1) * cols[1]
    affine = (zy + x.view(1, 1, -1, 1) * cols[2]).permute(3, 0, 1, 2)  # (3 xyz, d, h, w)
    disp = _elastic_coarse(params.elastic, coarse, shape, half, device)  # (3 zyx, d, h, w)
    coarse_grid = affine + disp.flip(0)
    if flips:
        coarse_grid = coarse_grid.flip([a + 1 for a in sorted(flips)])
    full = F.interpolate(coarse_grid[None], size=shape, mode="trilinear", align_corners=True)
    return full.permute(0, 2, 3, 4, 1)


def apply_spatial(
    image: torch.Tensor,
    label: torch.Tensor | None,
    params: AugmentParams,
    image_interpolation: Interpolation,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample float32 image ``(C, D, H, W)`` and label ``(D, H, W)`` on one shared grid."""
    if params.needs_resampling:
        grid = _sampling_grid(params, image.device)
        mode = "bilinear" if image_interpolation == "linear" else "nearest"  # bilinear = trilinear
        image = F.grid_sample(
            image[None], grid, mode=mode, padding_mode=params.image_padding, align_corners=True
        )[0]
        if label is not None:
            # float32 represents every integer up to 2**24 exactly; nearest copies values
            warped = F.grid_sample(
                label[None, None].to(torch.float32),
                grid,
                mode="nearest",
                padding_mode="zeros",
                align_corners=True,
            )[0, 0]
            label = warped.to(label.dtype)
    elif params.flip_axes:  # flips alone: exact and cheap; otherwise they are in the grid
        image = torch.flip(image, [a + 1 for a in params.flip_axes])
        if label is not None:
            label = torch.flip(label, list(params.flip_axes))
    return image, label
