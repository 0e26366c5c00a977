"""Intensity normalisation: what a stage's network sees instead of Hounsfield units.

Every scheme is a clip followed by an affine map, ``(clip(x, lower, upper) - mean) / std``,
except the per-image z-score, whose mean and std are those of the array being normalised:

* ``foreground`` (nnU-Net's CT scheme): clip to percentiles of the labelled foreground voxels
  of the training cases, z-score with their mean and std after clipping;
* ``window``: clip to a HU window and map it linearly onto an output range ([-1, 1], or
  [0, 1] for seed 002's "clip [-200, 300] scaled to [0, 1]");
* ``zscore_image`` (seed 003): no clip, each image's own mean and std.

The resolved numbers are recorded in every bundle, so inference normalises exactly as
training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from flarecli.core.errors import InputError, ModelError

#: Floor of a standard deviation, so a constant image or window cannot divide by zero.
MIN_STD = 1e-3


@dataclass(frozen=True)
class Intensity:
    """``(clip(x, lower, upper) - mean) / std``; ``mode`` 'zscore_image' computes mean and
    std per array (``lower``/``upper`` None = no clip). Bundles written before the window
    schemes took parameters name them 'window325' and 'window200'; they read as windows."""

    mode: str
    lower: float | None
    upper: float | None
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        values = [v for v in (self.lower, self.upper, self.mean, self.std) if v is not None]
        if not all(np.isfinite(values)) or not self.std > 0 or (
                self.lower is not None and self.upper is not None and self.lower >= self.upper):
            raise ValueError(f"intensity {asdict(self)}: needs finite numbers, std > 0 and "
                             "lower < upper")

    def apply(self, image):
        """Normalise a numpy array or torch tensor (returns float32 of the same kind)."""
        if isinstance(image, np.ndarray):  # one float32 copy, then in place
            out = image.astype(np.float32, order="C")  # a strided view too
            if self.lower is not None or self.upper is not None:
                np.clip(out, self.lower, self.upper, out=out)
            if self.mode == "zscore_image":
                mean, std = float(out.mean(dtype=np.float64)), float(out.std(dtype=np.float64))
                mean, std = np.float32(mean), np.float32(max(std, MIN_STD))
            else:
                mean, std = np.float32(self.mean), np.float32(self.std)
            out -= mean
            out /= std
            return out
        out = image.float()
        if self.lower is not None or self.upper is not None:
            out = out.clamp(self.lower, self.upper)
        if self.mode == "zscore_image":
            d = out.double()
            return (out - float(d.mean())) / max(float(d.std(unbiased=False)), MIN_STD)
        return (out - self.mean) / self.std

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Intensity:
        """Read a bundle's record; raises ModelError when it is incomplete or invalid."""
        try:
            def number(key: str, default: float | None) -> float | None:
                value = data.get(key, default)
                return None if value is None else float(value)

            return cls(str(data["mode"]), number("lower", None), number("upper", None),
                       number("mean", 0.0), number("std", 1.0))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"invalid intensity record {data!r} ({e})") from None


def window(hu: tuple[float, float], to: tuple[float, float] = (-1.0, 1.0)) -> Intensity:
    """Clip to ``hu`` and map it linearly onto ``to``."""
    std = (hu[1] - hu[0]) / (to[1] - to[0])
    return Intensity("window", float(hu[0]), float(hu[1]), float(hu[0] - to[0] * std),
                     float(std))


def foreground_samples(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                       n: int = 10000) -> np.ndarray:
    """Up to ``n`` random image values inside the labelled foreground (label > 0)."""
    values = image[label > 0]
    if values.size > n:
        values = rng.choice(values, n, replace=False)
    return values.astype(np.float32)


def foreground_intensity(samples: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
                         ) -> Intensity:
    """nnU-Net's CT scheme: clip at percentiles of foreground voxels, z-score with the
    foreground mean and std (after clipping). Raises InputError without samples."""
    if samples.size == 0:
        raise InputError("no labelled foreground voxels to compute intensity statistics from")
    lo, hi = np.percentile(samples, list(percentiles))
    clipped = np.clip(samples, lo, hi)
    return Intensity("foreground", float(lo), float(hi), float(clipped.mean()),
                     float(max(clipped.std(), MIN_STD)))


class Scheme(Protocol):
    """A recipe's intensity section (:class:`flarecli.core.recipes.spec.IntensityScheme`):
    which scheme, and its parameters."""

    scheme: str
    percentiles: tuple[float, float]
    hu: tuple[float, float] | None
    to: tuple[float, float]


def resolve(spec: Scheme, samples: np.ndarray | None = None) -> Intensity:
    """The Intensity of a recipe's intensity section (``samples``: foreground voxels of the
    training cases, for the 'foreground' scheme)."""
    if spec.scheme == "window":
        return window(spec.hu, spec.to)
    if spec.scheme == "zscore_image":
        return Intensity("zscore_image", None, None)
    return foreground_intensity(samples if samples is not None else np.zeros(0),
                                spec.percentiles)
