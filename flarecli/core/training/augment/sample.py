"""Sampling the augmentation parameters of one sample from an explicit
``numpy.random.Generator``: the only randomness of augmentation, drawn in a fixed order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flarecli.core.training.augment.params import (
    AugmentConfig,
    AugmentParams,
    ElasticParams,
    GammaParams,
    NoiseParams,
)

_SEED_HIGH = 2**62  # torch.Generator.manual_seed accepts any 64-bit value; stay well inside it


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
    spatial = _sample_spatial(rng, config)  # drawn first, then the intensity transforms
    intensity = _sample_intensity(rng, config)
    return AugmentParams(
        shape_zyx=tuple(int(s) for s in shape_zyx),  # type: ignore[arg-type]
        spacing_zyx=spacing,  # type: ignore[arg-type]
        image_padding=config.image_padding,
        **spatial,
        **intensity,
    )


def _sample_spatial(rng: np.random.Generator, c: AugmentConfig) -> dict[str, Any]:
    """Rotation, scaling, elastic deformation and flips, in this order of draws."""
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
    return {"rotation_rad": rotation, "scale": scale, "elastic": elastic, "flip_axes": flips}


def _sample_intensity(rng: np.random.Generator, c: AugmentConfig) -> dict[str, Any]:
    """Noise, blur, brightness, contrast, low resolution, gamma, then the shift (added last,
    so that adding it left every earlier transform's draws as they were)."""
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

    do = rng.random() < c.p_shift
    value = _uniform(rng, c.shift)
    shift = value if do else None
    return {"noise": noise, "blur_sigma_vox": blur, "brightness": brightness, "shift": shift,
            "contrast": contrast, "lowres_zoom": lowres, "gamma": gamma}
