"""Data augmentation for 3-D segmentation training (image + label volumes).

Every augmentation is split into two steps:

1. :func:`sample_params` draws all random parameters for ONE sample from an explicit
   ``numpy.random.Generator`` into the frozen dataclass :class:`AugmentParams`.  Nothing else
   in this module touches a random number generator it was not handed.
2. :func:`apply` applies those parameters deterministically with torch operations on whatever
   device the tensors live on.  Transforms that need random fields (additive noise, the elastic
   displacement field) create a ``torch.Generator`` on the tensor's device, seeded from an
   integer stored in the parameters.  The same parameters therefore give bit-identical
   output on the same device; CPU and CUDA generators produce different streams, so noise
   fields and elastic fields differ between devices (everything else is the same up to
   floating-point rounding).

Conventions
-----------
* Axis order is always ``(z, y, x)`` = ``(D, H, W)``; an "axis" index refers to this order
  (0 = z / depth, 1 = y / height, 2 = x / width).
* Images are float tensors ``(C, D, H, W)`` (batch: ``(B, C, D, H, W)``) holding normalised
  intensities in any range; float32, float16 and bfloat16 are accepted, arithmetic is done in
  float32 and the result is cast back to the input dtype.
* Labels are integer tensors ``(D, H, W)`` (batch: ``(B, D, H, W)``), typically int64 or uint8,
  with 0 = background.  The dtype is kept.

Order of operations in :func:`apply`
------------------------------------
1. Spatial: rotation, scaling and elastic deformation are composed into one sampling grid
   and resampled once with ``grid_sample`` (trilinear for the image, nearest for the label;
   the label is padded with 0, the image with ``params.image_padding``).  Flips are done
   afterwards with ``torch.flip`` (exact, and free when no other spatial transform is active).
   With no rotation / scaling / elastic sampled, ``grid_sample`` is not called at all.
2. Intensity (image only), in the nnU-Net order: Gaussian noise, Gaussian blur, brightness
   (multiplicative) and shift (additive), contrast, low-resolution simulation, gamma.

Rotation happens in physical space when ``spacing_zyx`` is given to :func:`sample_params`
(voxel indices are converted to millimetres, rotated, and converted back), so anisotropic
volumes are rotated rigidly in the world.  Without a spacing the volume is treated as
isotropic, i.e. the rotation is done in voxel-index space, which shears the anatomy of an
anisotropic volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "ElasticParams",
    "GammaParams",
    "NoiseParams",
    "apply",
    "augment_batch",
    "identity_params",
    "sample_params",
]

Padding = Literal["border", "zeros"]
Interpolation = Literal["linear", "nearest"]
Vec3 = tuple[float, float, float]

_SEED_HIGH = 2**62  # torch.Generator.manual_seed accepts any 64-bit value; stay well inside it
_ELASTIC_NODE_SPACING = 3.0  # elastic control-grid spacing, in units of sigma: nodes every sigma/3


# --------------------------------------------------------------------------------------------
# configuration and parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of all augmentations (defaults roughly follow nnU-Net).

    Every ``p_*`` is the probability that the transform is applied to a sample; ranges are
    ``(low, high)`` of a uniform distribution.

    Attributes:
        p_rotation: probability of a rotation.
        rotation_deg: maximum absolute angle in degrees; each axis in ``rotation_axes`` gets an
            angle drawn uniformly from ``[-rotation_deg, +rotation_deg]``.
        rotation_axes: axes (0 = z, 1 = y, 2 = x) about which to rotate; ``(0,)`` gives in-plane
            (axial) rotation only, which suits strongly anisotropic data.
        p_scale: probability of scaling.
        scale: range of the sampling-coordinate scale factor ``s``: the output voxel at offset
            ``d`` from the centre samples the input at ``s * d``, so ``s < 1`` zooms in
            (anatomy appears ``1/s`` times larger), as in nnU-Net.
        scale_per_axis: draw an independent factor per axis instead of one isotropic factor.
        p_elastic: probability of an elastic deformation (off by default: it costs time).
        elastic_sigma_vox: range of the Gaussian smoothing sigma of the displacement field,
            in voxels (larger = smoother, more global deformation).
        elastic_magnitude_vox: range of the RMS displacement, in voxels.
        p_flip: probability of flipping, independently for each axis in ``flip_axes``.
        flip_axes: axes that may be flipped.
        image_padding: how the image is padded outside the volume in spatial transforms:
            ``"border"`` repeats the edge voxel (default: normalised CT has no natural "zero",
            and replicated edges are closer to the real surroundings than a constant),
            ``"zeros"`` pads with 0 like nnU-Net.  Labels are always padded with 0.
        p_noise: probability of additive Gaussian noise.
        noise_std: range of the noise standard deviation, in image intensity units.
        p_blur: probability of Gaussian blurring.
        blur_sigma_vox: range of the blur sigma in voxels.
        blur_per_axis: draw an independent sigma per axis instead of one isotropic sigma.
        p_brightness: probability of multiplying the image by a factor.
        brightness: range of the multiplicative brightness factor.
        p_shift: probability of adding an offset to the image (after the brightness factor).
        shift: range of the additive offset, in image intensity units.
        p_contrast: probability of a contrast change.
        contrast: range of the contrast factor; intensities are stretched around the per-channel
            mean and clipped to the pre-transform per-channel ``[min, max]``.
        p_lowres: probability of low-resolution simulation.
        lowres_zoom: range of the zoom factor of the intermediate low-resolution volume
            (0.5 = half the voxels along each axis).
        p_gamma: probability of a gamma transform.
        gamma: range of gamma.  If the range straddles 1, gamma is drawn from ``[low, 1)`` or
            ``[1, high]`` with equal probability (so brightening and darkening are equally
            likely, as in nnU-Net).
        p_gamma_invert: probability, given a gamma transform, that it is applied to the negated
            image (which affects the bright end instead of the dark end).
    """

    p_rotation: float = 0.2
    rotation_deg: float = 30.0
    rotation_axes: tuple[int, ...] = (0, 1, 2)
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    scale_per_axis: bool = False
    p_elastic: float = 0.0
    elastic_sigma_vox: tuple[float, float] = (9.0, 13.0)
    elastic_magnitude_vox: tuple[float, float] = (0.5, 3.0)
    p_flip: float = 0.5
    flip_axes: tuple[int, ...] = (0, 1, 2)
    image_padding: Padding = "border"
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma_vox: tuple[float, float] = (0.5, 1.0)
    blur_per_axis: bool = False
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_shift: float = 0.0
    shift: tuple[float, float] = (-0.1, 0.1)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_gamma_invert: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "p_rotation", "p_scale", "p_elastic", "p_flip", "p_noise", "p_blur",
            "p_brightness", "p_shift", "p_contrast", "p_lowres", "p_gamma", "p_gamma_invert",
        ):  # fmt: skip
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        for name in (
            "scale", "elastic_sigma_vox", "elastic_magnitude_vox", "noise_std",
            "blur_sigma_vox", "brightness", "shift", "contrast", "lowres_zoom", "gamma",
        ):  # fmt: skip
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {low, high}")
        for name in ("rotation_axes", "flip_axes"):
            if any(a not in (0, 1, 2) for a in getattr(self, name)):
                raise ValueError(f"{name} must contain only 0, 1, 2")
        if self.scale[0] <= 0 or self.gamma[0] <= 0 or self.lowres_zoom[0] <= 0:
            raise ValueError("scale, gamma and lowres_zoom must be positive")
        if self.lowres_zoom[1] > 1.0:
            raise ValueError("lowres_zoom must not exceed 1")
        if self.image_padding not in ("border", "zeros"):
            raise ValueError(f"image_padding must be 'border' or 'zeros', got {self.image_padding}")

    @classmethod
    def none(cls, **overrides: object) -> AugmentConfig:
        """A config with every probability set to 0, with ``overrides`` applied on top."""
        zero = {name: 0.0 for name in cls.__dataclass_fields__ if name.startswith("p_")}
        zero.update(overrides)
        return cls(**zero)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ElasticParams:
    """Elastic deformation: smooth random displacement field.

    Attributes:
        sigma_vox: Gaussian smoothing sigma of the field, in voxels.
        magnitude_vox: RMS displacement in voxels (over the control-grid nodes and the three
            components; the upsampled per-voxel field has practically the same RMS).
        seed: seed of the ``torch.Generator`` that draws the white-noise field.
    """

    sigma_vox: float
    magnitude_vox: float
    seed: int


@dataclass(frozen=True)
class NoiseParams:
    """Additive zero-mean Gaussian noise with standard deviation ``std`` (intensity units)."""

    std: float
    seed: int


@dataclass(frozen=True)
class GammaParams:
    """Gamma transform ``x -> x ** gamma`` on the per-channel ``[min, max]``-rescaled image.

    ``invert=True`` applies it to ``-image`` and negates the result back.
    """

    gamma: float
    invert: bool


@dataclass(frozen=True)
class AugmentParams:
    """Everything sampled for one sample; ``None`` (or empty ``flip_axes``) = not applied.

    Attributes:
        shape_zyx: spatial shape ``(D, H, W)`` the parameters were sampled for.
        spacing_zyx: voxel spacing (any length unit, e.g. mm) used for physical-space rotation;
            ``(1, 1, 1)`` = rotate in voxel-index space.
        rotation_rad: angles in radians about the z, y and x axes (applied as ``Rz @ Ry @ Rx``).
        scale: per-axis sampling-coordinate scale (``< 1`` zooms in), see :class:`AugmentConfig`.
        elastic: elastic deformation parameters.
        flip_axes: spatial axes (0 = z, 1 = y, 2 = x) to flip.
        image_padding: ``"border"`` or ``"zeros"``, padding of the image in resampling.
        noise: additive Gaussian noise.
        blur_sigma_vox: Gaussian blur sigma per axis ``(z, y, x)`` in voxels.
        brightness: multiplicative factor.
        shift: additive offset.
        contrast: contrast factor around the per-channel mean.
        lowres_zoom: zoom factor of the intermediate low-resolution volume, in ``(0, 1]``.
        gamma: gamma transform.
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx: Vec3 = (1.0, 1.0, 1.0)
    rotation_rad: Vec3 | None = None
    scale: Vec3 | None = None
    elastic: ElasticParams | None = None
    flip_axes: tuple[int, ...] = field(default=())
    image_padding: Padding = "border"
    noise: NoiseParams | None = None
    blur_sigma_vox: Vec3 | None = None
    brightness: float | None = None
    shift: float | None = None
    contrast: float | None = None
    lowres_zoom: float | None = None
    gamma: GammaParams | None = None

    @property
    def needs_resampling(self) -> bool:
        """True if a rotation, scaling or elastic deformation is active (needs grid_sample)."""
        return self.rotation_rad is not None or self.scale is not None or self.elastic is not None


def identity_params(shape_zyx: tuple[int, int, int]) -> AugmentParams:
    """Parameters that leave image and label unchanged."""
    return AugmentParams(shape_zyx=tuple(int(s) for s in shape_zyx))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_HIGH))


def sample_params(
    rng: np.random.Generator,
    config: AugmentConfig,
    shape_zyx: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float] | None = None,
) -> AugmentParams:
    """Draw the augmentation parameters for one sample.

    Each transform always consumes the same number of draws from ``rng`` whether or not it is
    applied, so changing one probability does not change the values drawn for the others.

    Args:
        rng: the only source of randomness.
        config: probabilities and ranges.
        shape_zyx: spatial shape ``(D, H, W)`` of the sample (stored for checking in ``apply``).
        spacing_zyx: voxel spacing ``(z, y, x)`` (e.g. mm).  If given, rotations are done in
            physical space; if ``None``, in voxel-index space (isotropic spacing assumed).

    Returns:
        The frozen parameters.
    """
    if len(shape_zyx) != 3 or any(int(s) < 1 for s in shape_zyx):
        raise ValueError(f"shape_zyx must be three positive ints, got {shape_zyx}")
    spacing = (1.0, 1.0, 1.0) if spacing_zyx is None else tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing_zyx must be three positive numbers, got {spacing_zyx}")
    c = config

    # spatial --------------------------------------------------------------------------------
    do = rng.random() < c.p_rotation
    max_rad = math.radians(c.rotation_deg)
    angles = rng.uniform(-max_rad, max_rad, size=3)
    rotation = None
    if do:
        rotation = tuple(float(angles[a]) if a in c.rotation_axes else 0.0 for a in range(3))

    do = rng.random() < c.p_scale
    factors = rng.uniform(c.scale[0], c.scale[1], size=3)
    scale = None
    if do:
        scale = tuple(float(f) for f in factors) if c.scale_per_axis else (float(factors[0]),) * 3

    do = rng.random() < c.p_elastic
    elastic_p = ElasticParams(
        sigma_vox=_uniform(rng, c.elastic_sigma_vox),
        magnitude_vox=_uniform(rng, c.elastic_magnitude_vox),
        seed=_seed(rng),
    )
    elastic = elastic_p if do else None

    flip_draws = rng.random(3)
    flips = tuple(a for a in range(3) if a in c.flip_axes and flip_draws[a] < c.p_flip)

    # intensity ------------------------------------------------------------------------------
    do = rng.random() < c.p_noise
    noise_p = NoiseParams(std=_uniform(rng, c.noise_std), seed=_seed(rng))
    noise = noise_p if do else None

    do = rng.random() < c.p_blur
    sigmas = rng.uniform(c.blur_sigma_vox[0], c.blur_sigma_vox[1], size=3)
    blur = None
    if do:
        blur = tuple(float(s) for s in sigmas) if c.blur_per_axis else (float(sigmas[0]),) * 3

    do = rng.random() < c.p_brightness
    value = _uniform(rng, c.brightness)
    brightness = value if do else None

    do = rng.random() < c.p_contrast
    value = _uniform(rng, c.contrast)
    contrast = value if do else None

    do = rng.random() < c.p_lowres
    value = _uniform(rng, c.lowres_zoom)
    lowres = value if do else None

    do = rng.random() < c.p_gamma
    low, high = c.gamma
    lower_half = rng.random() < 0.5
    u = float(rng.random())
    if low < 1.0 < high:
        value = low + u * (1.0 - low) if lower_half else 1.0 + u * (high - 1.0)
    else:
        value = low + u * (high - low)
    invert = bool(rng.random() < c.p_gamma_invert)
    gamma = GammaParams(gamma=value, invert=invert) if do else None

    # drawn last, so adding it left every earlier transform's draws as they were
    do = rng.random() < c.p_shift
    value = _uniform(rng, c.shift)
    shift = value if do else None

    return AugmentParams(
        shape_zyx=tuple(int(s) for s in shape_zyx),  # type: ignore[arg-type]
        spacing_zyx=spacing,  # type: ignore[arg-type]
        rotation_rad=rotation,  # type: ignore[arg-type]
        scale=scale,  # type: ignore[arg-type]
        elastic=elastic,
        flip_axes=flips,
        image_padding=c.image_padding,
        noise=noise,
        blur_sigma_vox=blur,  # type: ignore[arg-type]
        brightness=brightness,
        shift=shift,
        contrast=contrast,
        lowres_zoom=lowres,
        gamma=gamma,
    )


# --------------------------------------------------------------------------------------------
# spatial transforms
# --------------------------------------------------------------------------------------------


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


def _gaussian_weights(sigma: float) -> list[float]:
    """Normalised 1-D Gaussian weights of length ``2 * ceil(3 sigma) + 1`` (Python floats)."""
    radius = max(1, math.ceil(3.0 * sigma))
    w = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(w)
    return [v / total for v in w]


def _convolve_axis(y: torch.Tensor, weights: Sequence[float], dim: int) -> torch.Tensor:
    """Valid 1-D correlation of ``y`` along ``dim`` as a weighted sum of shifted views.

    Memory-bound and much faster on CPU than ``conv3d`` with a 1-D kernel; the output is
    ``len(weights) - 1`` shorter along ``dim``.
    """
    m = y.shape[dim] - len(weights) + 1
    out = y.narrow(dim, 0, m) * weights[0]
    for i in range(1, len(weights)):
        out.add_(y.narrow(dim, i, m), alpha=weights[i])
    return out


def _gaussian_smooth(
    x: torch.Tensor, sigma_zyx: Sequence[float], *, valid: bool = False
) -> torch.Tensor:
    """Separable Gaussian smoothing of float32 ``(N, D, H, W)``; sigma per axis in voxels.

    With ``valid=False`` (default) the volume is edge-replicated once by the kernel radii (like
    ``scipy.ndimage.gaussian_filter(mode="nearest")``) and the output has the input shape.  With
    ``valid=True`` nothing is padded and each smoothed axis shrinks by ``2 * ceil(3 sigma)``.
    Kernels have radius ``ceil(3 sigma)``.  Axes with ``sigma <= 0`` or size 1 are skipped.
    """
    kernels: list[list[float] | None] = []
    for axis, sigma in enumerate(sigma_zyx):
        n = x.shape[axis + 1]
        if sigma <= 0 or n == 1:
            kernels.append(None)
            continue
        w = _gaussian_weights(float(sigma))
        r = len(w) // 2
        if not valid and r > n - 1:
            # replicate padding is limited to the input size: crop the kernel for tiny volumes
            w = w[r - (n - 1) : r + n]
            w = [v / sum(w) for v in w]
        kernels.append(w)
    if all(k is None for k in kernels):
        return x
    y = x
    if not valid:
        pad: list[int] = []
        for k in reversed(kernels):  # F.pad order: last dim first
            r = 0 if k is None else len(k) // 2
            pad += [r, r]
        y = F.pad(y[:, None], pad, mode="replicate")[:, 0]
    for axis, k in enumerate(kernels):
        if k is not None:
            y = _convolve_axis(y, k, axis + 1)
    return y


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
    smooth = _gaussian_smooth(
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


def _apply_spatial(
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


# --------------------------------------------------------------------------------------------
# intensity transforms (float32 (C, D, H, W) in, float32 out)
# --------------------------------------------------------------------------------------------


def _per_channel(values: torch.Tensor) -> torch.Tensor:
    """Reshape per-channel values ``(C,)`` for broadcasting against ``(C, D, H, W)``."""
    return values.view(-1, 1, 1, 1)


def _minmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel minimum and maximum of ``(C, D, H, W)``, each ``(C, 1, 1, 1)``."""
    lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
    return _per_channel(lo), _per_channel(hi)


def _add_noise(x: torch.Tensor, noise: NoiseParams) -> torch.Tensor:
    """``x + std * N(0, 1)``; the noise comes from a generator on ``x.device``."""
    gen = torch.Generator(device=x.device)
    gen.manual_seed(noise.seed)
    n = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    return n.mul_(noise.std).add_(x)


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``(x - mean) * factor + mean`` per channel, clipped to the per-channel input range."""
    mean = _per_channel(x.reshape(x.shape[0], -1).mean(dim=1))
    lo, hi = _minmax(x)
    out = torch.add(mean * (1.0 - factor), x, alpha=factor)
    return out.clamp_(lo, hi)


def _lowres(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Nearest downsampling to ``round(shape * zoom)`` and trilinear upsampling back."""
    shape = tuple(x.shape[1:])
    small = tuple(max(1, round(n * zoom)) for n in shape)
    if small == shape:
        return x
    down = F.interpolate(x[None], size=small, mode="nearest")
    return F.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0]


def _gamma(x: torch.Tensor, gamma: GammaParams) -> torch.Tensor:
    """Gamma on the per-channel ``[min, max]``-rescaled image, rescaled back.

    Normal: ``lo + span * ((x - lo) / span) ** g``.  Inverted (gamma of ``-x``):
    ``hi - span * ((hi - x) / span) ** g``.  Both keep the per-channel min and max; constant
    channels are returned unchanged.
    """
    lo, hi = _minmax(x)
    span = hi - lo
    inv_span = torch.where(span > 0, 1.0 / span.clamp_min(1e-30), torch.zeros_like(span))
    unit = torch.sub(hi, x) if gamma.invert else torch.sub(x, lo)
    unit.mul_(inv_span).clamp_(0.0, 1.0).pow_(gamma.gamma)
    if gamma.invert:
        return unit.mul_(-span).add_(hi)
    return unit.mul_(span).add_(lo)


def _apply_intensity(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    if params.noise is not None and params.noise.std > 0:
        x = _add_noise(x, params.noise)
    if params.blur_sigma_vox is not None:
        x = _gaussian_smooth(x, params.blur_sigma_vox)
    if params.brightness is not None:
        x = x * params.brightness
    if params.shift is not None:
        x = x + params.shift
    if params.contrast is not None:
        x = _contrast(x, params.contrast)
    if params.lowres_zoom is not None:
        x = _lowres(x, params.lowres_zoom)
    if params.gamma is not None:
        x = _gamma(x, params.gamma)
    return x


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def apply(
    image: torch.Tensor,
    label: torch.Tensor | None,
    params: AugmentParams,
    *,
    image_interpolation: Interpolation = "linear",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply sampled parameters to one sample, deterministically, on the tensors' device.

    Args:
        image: float tensor ``(C, D, H, W)`` (float32 / float16 / bfloat16), any intensity range.
        label: integer tensor ``(D, H, W)`` (e.g. int64 or uint8, 0 = background) or ``None``.
        params: from :func:`sample_params` for this spatial shape.
        image_interpolation: ``"linear"`` (trilinear, default) or ``"nearest"`` resampling of
            the image in spatial transforms; ``"nearest"`` exists mainly for tests (it makes
            image and label follow bit-identical sampling).

    Returns:
        ``(image, label)`` with the input shapes, dtypes and device.  Inputs are never modified
        in place; when no transform is active the input tensors themselves are returned.
    """
    if image.dim() != 4 or not image.is_floating_point():
        raise ValueError(
            f"image must be a float (C, D, H, W) tensor, got {image.dtype} {tuple(image.shape)}"
        )
    shape = tuple(image.shape[1:])
    if shape != tuple(params.shape_zyx):
        raise ValueError(f"image spatial shape {shape} != params.shape_zyx {params.shape_zyx}")
    if label is not None:
        if tuple(label.shape) != shape:
            raise ValueError(f"label shape {tuple(label.shape)} != image spatial shape {shape}")
        if label.is_floating_point() or label.is_complex():
            raise ValueError(f"label must be an integer tensor, got {label.dtype}")
        if label.device != image.device:
            raise ValueError("image and label must be on the same device")

    dtype = image.dtype
    x = image.to(torch.float32)
    x, label = _apply_spatial(x, label, params, image_interpolation)
    x = _apply_intensity(x, params)
    return (x if dtype == torch.float32 else x.to(dtype)), label


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    params: Sequence[AugmentParams],
    *,
    image_interpolation: Interpolation = "linear",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``params[b]`` to sample ``b`` of a batch (a loop over :func:`apply`).

    Args:
        images: float tensor ``(B, C, D, H, W)``.
        labels: integer tensor ``(B, D, H, W)`` or ``None``.
        params: one :class:`AugmentParams` per sample (``len(params) == B``).
        image_interpolation: see :func:`apply`.

    Returns:
        ``(images, labels)`` as new tensors with the input shapes, dtypes and device.
    """
    if images.dim() != 5:
        raise ValueError(f"images must be (B, C, D, H, W), got {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"got {len(params)} params for a batch of {images.shape[0]}")
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise ValueError("images and labels differ in batch size")
    out_images: list[torch.Tensor] = []
    out_labels: list[torch.Tensor] = []
    for b, p in enumerate(params):
        img, lab = apply(
            images[b],
            None if labels is None else labels[b],
            p,
            image_interpolation=image_interpolation,
        )
        out_images.append(img)
        if lab is not None:
            out_labels.append(lab)
    return torch.stack(out_images), (torch.stack(out_labels) if labels is not None else None)
