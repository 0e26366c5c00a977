"""Data augmentation for 3-D segmentation training (image + label volumes): the parameters
(:mod:`.params`), sampling them (:mod:`.sample`), and applying them (:mod:`.apply`) --
spatial transforms (:mod:`.spatial`), then intensity transforms (:mod:`.intensity`).

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

from flarecli.core.training.augment.apply import apply, augment_batch
from flarecli.core.training.augment.params import (
    AugmentConfig,
    AugmentParams,
    ElasticParams,
    GammaParams,
    NoiseParams,
    identity_params,
)
from flarecli.core.training.augment.sample import sample_params

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
