"""Applying sampled parameters to one sample or a batch, deterministically, on the tensors'
device: the spatial transforms first, then the intensity transforms."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flarecli.core.training.augment.intensity import apply_intensity
from flarecli.core.training.augment.params import AugmentParams, Interpolation
from flarecli.core.training.augment.spatial import apply_spatial


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
    x, label = apply_spatial(x, label, params, image_interpolation)
    x = apply_intensity(x, params)
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
