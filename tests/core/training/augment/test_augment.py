"""Tests for :mod:`augment`: known answers for every transform, alignment, reproducibility."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from flarecli.core.training.augment import (
    AugmentConfig,
    AugmentParams,
    ElasticParams,
    GammaParams,
    NoiseParams,
    apply,
    augment_batch,
    identity_params,
    sample_params,
)
from flarecli.core.training.augment.spatial import _voxel_matrix

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

ALL_ON = AugmentConfig(
    p_rotation=1.0, p_scale=1.0, p_elastic=1.0, p_flip=1.0, p_noise=1.0, p_blur=1.0,
    p_brightness=1.0, p_contrast=1.0, p_lowres=1.0, p_gamma=1.0,
)  # fmt: skip
SPATIAL_ON = AugmentConfig.none(p_rotation=1.0, p_scale=1.0, p_elastic=1.0, p_flip=1.0)


def _image(shape: tuple[int, int, int], seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((channels, *shape), generator=g)


def _blocks(shape: tuple[int, int, int], block: int = 8) -> torch.Tensor:
    """Label volume of cuboid blocks with values 0..5 (int64)."""
    z, y, x = torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij")
    return ((z // block) + 2 * (y // block) + 3 * (x // block)) % 6


def _ramp(shape: tuple[int, int, int]) -> torch.Tensor:
    """3-channel image whose channels are the z, y and x voxel coordinates (float32)."""
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    return torch.stack(grids)


# ---------------------------------------------------------------------------------- sampling


def test_same_seed_same_params_and_output() -> None:
    shape = (24, 28, 32)
    image, label = _image(shape), _blocks(shape)
    p1 = sample_params(np.random.default_rng(7), ALL_ON, shape)
    p2 = sample_params(np.random.default_rng(7), ALL_ON, shape)
    assert p1 == p2
    i1, l1 = apply(image, label, p1)
    i2, l2 = apply(image, label, p2)
    assert torch.equal(i1, i2)
    assert l1 is not None and l2 is not None and torch.equal(l1, l2)


def test_different_seeds_differ() -> None:
    shape = (24, 28, 32)
    image, label = _image(shape), _blocks(shape)
    p1 = sample_params(np.random.default_rng(1), ALL_ON, shape)
    p2 = sample_params(np.random.default_rng(2), ALL_ON, shape)
    assert p1 != p2
    i1, _ = apply(image, label, p1)
    i2, _ = apply(image, label, p2)
    assert not torch.allclose(i1, i2)


def test_all_on_samples_everything_and_none_samples_nothing() -> None:
    shape = (16, 16, 16)
    p = sample_params(np.random.default_rng(0), ALL_ON, shape)
    for name in ("rotation_rad", "scale", "elastic", "noise", "blur_sigma_vox", "brightness",
                 "contrast", "lowres_zoom", "gamma"):  # fmt: skip
        assert getattr(p, name) is not None, name
    assert p.flip_axes == (0, 1, 2)
    q = sample_params(np.random.default_rng(0), AugmentConfig.none(), shape)
    assert q == identity_params(shape)


def test_sampled_values_within_ranges() -> None:
    cfg = replace(ALL_ON, scale_per_axis=True, blur_per_axis=True)
    rng = np.random.default_rng(3)
    gammas = []
    for _ in range(200):
        p = sample_params(rng, cfg, (8, 8, 8))
        assert p.rotation_rad is not None and p.scale is not None and p.gamma is not None
        assert all(abs(a) <= math.radians(cfg.rotation_deg) for a in p.rotation_rad)
        assert all(cfg.scale[0] <= s <= cfg.scale[1] for s in p.scale)
        assert p.blur_sigma_vox is not None
        assert all(cfg.blur_sigma_vox[0] <= s <= cfg.blur_sigma_vox[1] for s in p.blur_sigma_vox)
        assert p.lowres_zoom is not None and 0.5 <= p.lowres_zoom <= 1.0
        assert p.brightness is not None and 0.75 <= p.brightness <= 1.25
        assert cfg.gamma[0] <= p.gamma.gamma <= cfg.gamma[1]
        gammas.append(p.gamma.gamma)
    # brightening and darkening gammas are about equally likely
    assert 0.35 < np.mean(np.array(gammas) < 1.0) < 0.65


def test_probabilities_are_respected_and_independent() -> None:
    cfg = AugmentConfig()  # defaults
    rng = np.random.default_rng(11)
    params = [sample_params(rng, cfg, (8, 8, 8)) for _ in range(4000)]
    assert abs(np.mean([p.rotation_rad is not None for p in params]) - 0.2) < 0.03
    assert abs(np.mean([p.gamma is not None for p in params]) - 0.3) < 0.03
    assert abs(np.mean([0 in p.flip_axes for p in params]) - 0.5) < 0.03
    assert all(p.elastic is None for p in params)
    # changing one probability does not change what is drawn for the others
    a = sample_params(np.random.default_rng(5), replace(ALL_ON, p_noise=0.0), (8, 8, 8))
    b = sample_params(np.random.default_rng(5), ALL_ON, (8, 8, 8))
    assert a.noise is None and b.noise is not None
    assert replace(b, noise=None) == a


def test_rotation_axes_restrict_angles() -> None:
    cfg = AugmentConfig.none(p_rotation=1.0, rotation_axes=(0,))
    p = sample_params(np.random.default_rng(0), cfg, (8, 8, 8))
    assert p.rotation_rad is not None
    assert p.rotation_rad[0] != 0.0 and p.rotation_rad[1:] == (0.0, 0.0)


def test_invalid_config_raises() -> None:
    with pytest.raises(ValueError):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(scale=(1.4, 0.7))
    with pytest.raises(ValueError):
        AugmentConfig(flip_axes=(3,))


# ---------------------------------------------------------------------------------- identity


@pytest.mark.parametrize("device", DEVICES)
def test_identity_returns_inputs_unchanged(device: str) -> None:
    shape = (10, 12, 14)
    image, label = _image(shape).to(device), _blocks(shape).to(device)
    p = sample_params(np.random.default_rng(0), AugmentConfig.none(), shape)
    out_i, out_l = apply(image, label, p)
    assert torch.equal(out_i, image)
    assert out_l is not None and torch.equal(out_l, label)


def test_shape_mismatch_raises() -> None:
    p = identity_params((8, 8, 8))
    with pytest.raises(ValueError):
        apply(_image((8, 8, 9)), None, p)
    with pytest.raises(ValueError):
        apply(_image((8, 8, 8)), _blocks((8, 8, 9)), p)
    with pytest.raises(ValueError):
        apply(_image((8, 8, 8)), _blocks((8, 8, 8)).float(), p)


# ------------------------------------------------------------------------ spatial, known answers


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
def test_flip_equals_torch_flip(axes: tuple[int, ...]) -> None:
    shape = (9, 10, 11)
    image, label = _image(shape, channels=2), _blocks(shape, 3)
    p = replace(identity_params(shape), flip_axes=axes)
    out_i, out_l = apply(image, label, p)
    assert torch.equal(out_i, torch.flip(image, [a + 1 for a in axes]))
    assert out_l is not None and torch.equal(out_l, torch.flip(label, list(axes)))


def test_rotation_90_degrees_equals_rot90() -> None:
    shape = (5, 12, 12)
    image, label = _image(shape), _blocks(shape, 3)
    p = replace(identity_params(shape), rotation_rad=(math.pi / 2, 0.0, 0.0))
    out_i, out_l = apply(image, label, p)
    # sampling q = R p with R the +90 degree rotation in the (y, x) plane
    expected = torch.rot90(image, k=-1, dims=(2, 3))
    torch.testing.assert_close(out_i, expected, atol=1e-5, rtol=0)
    assert out_l is not None and torch.equal(out_l, torch.rot90(label, k=-1, dims=(1, 2)))


def test_rotation_about_centre_keeps_centre_voxel() -> None:
    shape = (15, 15, 15)
    image = _image(shape)
    p = replace(identity_params(shape), rotation_rad=(0.4, -0.3, 0.2))
    out, _ = apply(image, None, p)
    assert torch.allclose(out[0, 7, 7, 7], image[0, 7, 7, 7], atol=1e-5)


def test_scale_on_linear_ramp() -> None:
    """Sampling-coordinate scale s: out(p) = in(c + s (p - c)); exact on a linear ramp."""
    shape = (11, 13, 17)
    image = _ramp(shape)
    s = (0.5, 0.8, 0.7)
    p = replace(identity_params(shape), scale=s)
    out, _ = apply(image, None, p)
    for axis in range(3):
        c = (shape[axis] - 1) / 2
        expected = c + s[axis] * (image[axis] - c)
        torch.testing.assert_close(out[axis], expected, atol=1e-4, rtol=0)


def test_physical_rotation_matrix_is_rigid_in_world_space() -> None:
    spacing = (3.0, 0.8, 0.8)
    p = AugmentParams(shape_zyx=(8, 8, 8), spacing_zyx=spacing, rotation_rad=(0.3, 0.5, -0.7))
    m = _voxel_matrix(p)
    world = np.diag(spacing) @ m @ np.diag(1.0 / np.array(spacing))
    np.testing.assert_allclose(world @ world.T, np.eye(3), atol=1e-12)
    # and in voxel space it is not orthogonal (anisotropy is respected, not ignored)
    assert not np.allclose(m @ m.T, np.eye(3), atol=1e-3)


def test_physical_rotation_about_z_ignores_z_spacing() -> None:
    shape = (6, 14, 14)
    image = _image(shape)
    cfg = AugmentConfig.none(p_rotation=1.0, rotation_axes=(0,))
    p_vox = sample_params(np.random.default_rng(4), cfg, shape)
    p_phys = sample_params(np.random.default_rng(4), cfg, shape, spacing_zyx=(5.0, 0.7, 0.7))
    torch.testing.assert_close(apply(image, None, p_vox)[0], apply(image, None, p_phys)[0])


def test_elastic_displacement_has_sampled_magnitude_and_is_smooth() -> None:
    shape = (48, 48, 48)
    image = _ramp(shape)
    elastic = ElasticParams(sigma_vox=10.0, magnitude_vox=2.0, seed=123)
    p = replace(identity_params(shape), elastic=elastic, image_padding="zeros")
    out, _ = apply(image, None, p)
    disp = out - image  # sampled input coordinate minus output coordinate, in voxels
    inner = disp[:, 8:-8, 8:-8, 8:-8]  # away from the border (no clipping by the padding)
    rms = inner.square().mean().sqrt().item()
    assert 1.4 < rms < 2.6
    # smooth: neighbouring voxels are displaced almost identically
    step = (inner[:, 1:] - inner[:, :-1]).abs()
    assert step.max().item() < 1.0 and step.mean().item() < 0.2
    # reproducible from the seed, different for another seed
    assert torch.equal(apply(image, None, p)[0], out)
    other = replace(p, elastic=replace(elastic, seed=124))
    assert not torch.allclose(apply(image, None, other)[0], out)


@pytest.mark.parametrize("with_elastic", [False, True])
def test_flip_inside_grid_equals_flip_after_resampling(with_elastic: bool) -> None:
    shape = (12, 14, 16)
    image, label = _image(shape), _blocks(shape, 4)
    base = replace(
        identity_params(shape),
        rotation_rad=(0.3, 0.1, -0.2),
        scale=(0.9, 0.9, 0.9),
        elastic=ElasticParams(9.0, 1.5, 5) if with_elastic else None,
    )
    out_i, out_l = apply(image, label, base)
    flipped_i, flipped_l = apply(image, label, replace(base, flip_axes=(0, 2)))
    torch.testing.assert_close(flipped_i, torch.flip(out_i, [1, 3]), atol=1e-4, rtol=0)
    assert out_l is not None and flipped_l is not None
    same = (flipped_l == torch.flip(out_l, [0, 2])).float().mean().item()
    assert same > 0.999  # nearest ties may round differently by one float ulp


# ---------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.uint8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_alignment_nearest_is_exact(label_dtype: torch.dtype, seed: int) -> None:
    shape = (32, 36, 40)
    label = _blocks(shape).to(label_dtype)
    image = (label.to(torch.float32) * 10.0)[None]
    cfg = replace(SPATIAL_ON, image_padding="zeros", scale_per_axis=True)
    p = sample_params(np.random.default_rng(seed), cfg, shape, spacing_zyx=(2.0, 1.0, 1.0))
    out_i, out_l = apply(image, label, p, image_interpolation="nearest")
    assert out_l is not None and out_l.dtype == label_dtype
    assert torch.equal(out_l, torch.round(out_i[0] / 10.0).to(label_dtype))
    assert set(out_l.unique().tolist()) <= set(range(6))
    assert not torch.equal(out_l, label)  # the transform really did something


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_alignment_trilinear_image(padding: str, seed: int) -> None:
    shape = (40, 44, 48)
    label = _blocks(shape, 12)
    image = (label.to(torch.float32) * 10.0)[None]
    cfg = replace(SPATIAL_ON, image_padding=padding)
    p = sample_params(np.random.default_rng(seed), cfg, shape)
    out_i, out_l = apply(image, label, p)
    assert out_l is not None and out_l.dtype == torch.int64
    assert set(out_l.unique().tolist()) <= set(range(6))
    # inside the volume the label is the nearest neighbour of the same sample point: voxels
    # away from block borders agree exactly (out-of-volume voxels: label 0, image padded)
    inside = apply(torch.ones((1, *shape)), None, replace(p, image_padding="zeros"))[0][0]
    interior = inside > 0.999
    # away from block borders: the output label is uniform in the 3x3x3 neighbourhood
    lab = out_l[None, None].float()
    uniform = (F.max_pool3d(lab, 3, 1, 1) == -F.max_pool3d(-lab, 3, 1, 1))[0, 0]
    mask = interior & uniform
    assert mask.float().mean() > 0.1
    agree = out_l[mask] == torch.round(out_i[0][mask] / 10.0).long()
    assert agree.float().mean() > 0.995
    # and trilinear equals the block value there (all 8 sampled corners in the same block)
    close = (out_i[0][mask] - 10.0 * out_l[mask]).abs() < 1e-3
    assert close.float().mean() > 0.99
    # sample points entirely outside the input volume: background label
    assert (out_l[inside < 1e-6] == 0).all()


# ---------------------------------------------------------------------- intensity, known answers


def _only(shape: tuple[int, int, int], **fields: object) -> AugmentParams:
    return replace(identity_params(shape), **fields)  # type: ignore[arg-type]


def test_brightness_multiplies() -> None:
    shape = (8, 9, 10)
    image = _image(shape, channels=2)
    out, _ = apply(image, None, _only(shape, brightness=1.2))
    torch.testing.assert_close(out, image * 1.2)


def test_contrast_below_one_keeps_mean_and_shrinks_range() -> None:
    shape = (16, 16, 16)
    image = _image(shape, channels=2) * 3.0 + 1.0
    out, _ = apply(image, None, _only(shape, contrast=0.8))
    mean_in = image.mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), mean_in, atol=1e-5, rtol=0)
    expected = (image - mean_in.view(-1, 1, 1, 1)) * 0.8 + mean_in.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_contrast_above_one_is_clipped_to_input_range() -> None:
    shape = (16, 16, 16)
    image = _image(shape)
    out, _ = apply(image, None, _only(shape, contrast=1.25))
    assert out.min() >= image.min() and out.max() <= image.max()
    m = image.mean()
    expected = (image - m) * 1.25 + m
    unclipped = (expected > image.min()) & (expected < image.max())
    torch.testing.assert_close(out[unclipped], expected[unclipped], atol=1e-5, rtol=0)
    assert out.std() > image.std()


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("gamma", [0.7, 1.5])
def test_gamma_keeps_min_max_and_matches_formula(invert: bool, gamma: float) -> None:
    shape = (12, 12, 12)
    image = _image(shape, channels=2) * 2.0 - 0.5
    out, _ = apply(image, None, _only(shape, gamma=GammaParams(gamma, invert)))
    flat_in, flat_out = image.reshape(2, -1), out.reshape(2, -1)
    torch.testing.assert_close(flat_out.amin(1), flat_in.amin(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat_out.amax(1), flat_in.amax(1), atol=1e-5, rtol=0)
    x = image.double().numpy()
    lo, hi = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    if invert:
        expected = hi - (hi - lo) * ((hi - x) / (hi - lo)) ** gamma
    else:
        expected = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # monotone: the order of voxels is kept
    order = torch.argsort(image[0].flatten())
    assert (torch.diff(out[0].flatten()[order]) >= -1e-6).all()


def test_gamma_constant_channel_unchanged() -> None:
    image = torch.full((1, 6, 6, 6), 3.0)
    out, _ = apply(image, None, _only((6, 6, 6), gamma=GammaParams(1.4, False)))
    assert torch.equal(out, image)


def test_noise_has_sampled_std() -> None:
    shape = (64, 64, 64)
    image = torch.full((1, *shape), 2.0)
    p = _only(shape, noise=NoiseParams(std=0.07, seed=9))
    out, _ = apply(image, None, p)
    resid = out - image
    assert abs(resid.std().item() - 0.07) < 0.002
    assert abs(resid.mean().item()) < 0.001
    assert torch.equal(apply(image, None, p)[0], out)
    other, _ = apply(image, None, _only(shape, noise=NoiseParams(std=0.07, seed=10)))
    assert not torch.equal(other, out)


def test_blur_matches_scipy_and_reduces_white_noise_variance() -> None:
    shape = (20, 22, 24)
    image = _image(shape)
    sigma = (1.0, 0.7, 1.3)
    out, _ = apply(image, None, _only(shape, blur_sigma_vox=sigma))
    # scipy with mode="nearest" (= edge replication) and the same kernel radii ceil(3 sigma)
    radii = [math.ceil(3 * s) for s in sigma]
    expected = ndimage.gaussian_filter(
        image[0].double().numpy(), sigma=sigma, mode="nearest", radius=radii
    )
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    assert out.var() < 0.3 * image.var()
    const = torch.full((1, *shape), 4.0)
    torch.testing.assert_close(apply(const, None, _only(shape, blur_sigma_vox=sigma))[0], const)


@pytest.mark.parametrize("zoom", [0.5, 0.63, 1.0])
def test_lowres_keeps_shape_and_loses_detail(zoom: float) -> None:
    shape = (20, 21, 22)
    image = _image(shape)
    out, _ = apply(image, None, _only(shape, lowres_zoom=zoom))
    assert out.shape == image.shape
    if zoom == 1.0:
        assert torch.equal(out, image)
        return
    assert out.var() < image.var()
    const = torch.full((1, *shape), -1.5)
    torch.testing.assert_close(apply(const, None, _only(shape, lowres_zoom=zoom))[0], const)
    # a linear ramp along x survives up to the edge voxels (trilinear reproduces linear data)
    ramp = _ramp(shape)[2:3]
    out_ramp, _ = apply(ramp, None, _only(shape, lowres_zoom=zoom))
    assert out_ramp.shape == ramp.shape
    assert (out_ramp - ramp).abs().mean() < 1.0


# ---------------------------------------------------------------- dtype, device, batch helper


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_and_device_preserved(device: str, dtype: torch.dtype) -> None:
    shape = (16, 18, 20)
    image = _image(shape).to(device=device, dtype=dtype)
    label = _blocks(shape).to(device=device, dtype=torch.uint8)
    p = sample_params(np.random.default_rng(0), ALL_ON, shape)
    out_i, out_l = apply(image, label, p)
    assert out_i.dtype == dtype and out_i.shape == image.shape and out_i.device == image.device
    assert out_l is not None
    assert out_l.dtype == torch.uint8 and out_l.shape == label.shape
    assert out_l.device == label.device
    assert torch.isfinite(out_i.float()).all()
    # low precision follows the float32 computation up to the input/output rounding
    ref, ref_l = apply(image.float(), label, p)
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (out_i.float() - ref).abs().max() < tol * max(1.0, ref.abs().max().item())
    assert ref_l is not None and torch.equal(out_l, ref_l)


def test_label_none_supported() -> None:
    shape = (8, 8, 8)
    p = sample_params(np.random.default_rng(0), ALL_ON, shape)
    out_i, out_l = apply(_image(shape), None, p)
    assert out_l is None and out_i.shape == (1, *shape)


@pytest.mark.parametrize("with_labels", [True, False])
def test_batch_equals_per_sample(with_labels: bool) -> None:
    shape = (12, 14, 16)
    images = torch.stack([_image(shape, seed=s) for s in range(3)])
    labels = torch.stack([_blocks(shape, 4 + s) for s in range(3)]) if with_labels else None
    rng = np.random.default_rng(21)
    params = [sample_params(rng, ALL_ON, shape) for _ in range(3)]
    out_i, out_l = augment_batch(images, labels, params)
    assert out_i.shape == images.shape and out_i.dtype == images.dtype
    for b in range(3):
        ref_i, ref_l = apply(images[b], None if labels is None else labels[b], params[b])
        assert torch.equal(out_i[b], ref_i)
        if labels is not None:
            assert out_l is not None and ref_l is not None and torch.equal(out_l[b], ref_l)
    if labels is None:
        assert out_l is None
    with pytest.raises(ValueError):
        augment_batch(images, labels, params[:2])


def test_inputs_not_modified_in_place() -> None:
    shape = (12, 12, 12)
    image, label = _image(shape), _blocks(shape, 4)
    image_copy, label_copy = image.clone(), label.clone()
    for seed in range(5):
        apply(image, label, sample_params(np.random.default_rng(seed), ALL_ON, shape))
    assert torch.equal(image, image_copy) and torch.equal(label, label_copy)


def test_single_slice_volume_stays_in_plane() -> None:
    """A (1, H, W) volume: rotations/elastic never sample outside its only slice."""
    shape = (1, 32, 32)
    label = _blocks(shape, 8)
    image = (label.float() * 10.0)[None]
    cfg = replace(SPATIAL_ON, image_padding="zeros")
    p = sample_params(np.random.default_rng(0), cfg, shape)
    out_i, out_l = apply(image, label, p, image_interpolation="nearest")
    assert out_l is not None and torch.equal(out_l, torch.round(out_i[0] / 10.0).long())
    centre = out_l[0, 8:24, 8:24]
    assert (centre > 0).float().mean() > 0.5  # content kept, not padded away
