"""What an augmentation is made of: the probabilities and ranges to sample from
(:class:`AugmentConfig`), and everything sampled for one sample (:class:`AugmentParams`),
frozen, so that applying it is deterministic. Axis order ``(z, y, x)`` throughout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Padding = Literal["border", "zeros"]
Interpolation = Literal["linear", "nearest"]
Vec3 = tuple[float, float, float]


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
