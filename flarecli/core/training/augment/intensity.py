"""Intensity transforms of the image, in the nnU-Net order: Gaussian noise, Gaussian blur,
brightness and shift, contrast, low-resolution simulation, gamma (float32 ``(C, D, H, W)`` in
and out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flarecli.core.training.augment.filters import gaussian_smooth
from flarecli.core.training.augment.params import AugmentParams, GammaParams, NoiseParams


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


def apply_intensity(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    if params.noise is not None and params.noise.std > 0:
        x = _add_noise(x, params.noise)
    if params.blur_sigma_vox is not None:
        x = gaussian_smooth(x, params.blur_sigma_vox)
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
