"""Preprocessing shared by training and inference: intensity normalisation, resampling,
regions of interest, and the on-disk cache of preprocessed training arrays.

Two stages (StMt): *coarse* = the whole volume resampled to a fixed size (128^3) to find the
abdomen; *fine* = the foreground box plus a margin in mm, resampled to a fixed size (192^3).
Every resampling is recorded as a box in voxel coordinates of the source array, so inference
can map a result back onto the original grid exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import InputError

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # [(start, stop)] per z, y, x

#: Fixed HU windows offered besides nnU-Net's foreground statistics.
WINDOWS: dict[str, tuple[float, float]] = {"window325": (-325.0, 325.0),
                                           "window200": (-200.0, 300.0)}
NORMALISATIONS: tuple[str, ...] = ("foreground", *WINDOWS)


@dataclass(frozen=True)
class Intensity:
    """Clip to [lower, upper] then ``(x - mean) / std``."""

    mode: str
    lower: float
    upper: float
    mean: float
    std: float

    def apply(self, image):
        """Normalise a numpy array or torch tensor (returns float32 of the same kind)."""
        if isinstance(image, np.ndarray):
            out = np.clip(image.astype(np.float32, copy=False), self.lower, self.upper)
            return (out - np.float32(self.mean)) / np.float32(self.std)
        return (image.float().clamp(self.lower, self.upper) - self.mean) / self.std

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Intensity:
        return cls(str(data["mode"]), *(float(data[k]) for k in ("lower", "upper", "mean",
                                                                   "std")))


def window(name: str) -> Intensity:
    lo, hi = WINDOWS[name]
    return Intensity(name, lo, hi, (lo + hi) / 2, (hi - lo) / 2)


def foreground_samples(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                       n: int = 10000) -> np.ndarray:
    """Up to ``n`` random image values inside the labelled foreground (label > 0)."""
    values = image[label > 0]
    if values.size > n:
        values = rng.choice(values, n, replace=False)
    return values.astype(np.float32)


def foreground_intensity(samples: np.ndarray) -> Intensity:
    """nnU-Net's CT scheme: clip at the 0.5/99.5 percentiles of foreground voxels, z-score
    with the foreground mean and std (after clipping). Raises InputError without samples."""
    if samples.size == 0:
        raise InputError("no labelled foreground voxels to compute intensity statistics from")
    lo, hi = np.percentile(samples, [0.5, 99.5])
    clipped = np.clip(samples, lo, hi)
    return Intensity("foreground", float(lo), float(hi), float(clipped.mean()),
                     float(max(clipped.std(), 1e-3)))


# ---------------------------------------------------------------------------------------------
# boxes and resampling
# ---------------------------------------------------------------------------------------------

def box_of(mask: np.ndarray) -> Box | None:
    """Tight [start, stop) box of a mask, or None when empty."""
    from flarecli.core.metrics.scores import bounding_box

    found = bounding_box(mask)
    return None if found is None else tuple((s.start, s.stop) for s in found)  # type: ignore


def expand_box(box: Box, margin_vox, shape) -> Box:
    """Grow a box by per-axis margins (voxels), clipped to the array shape."""
    return tuple((max(0, a - int(m)), min(int(n), b + int(m)))
                 for (a, b), m, n in zip(box, margin_vox, shape, strict=True))  # type: ignore


def margin_voxels(margin_mm: float, spacing_zyx) -> tuple[int, int, int]:
    return tuple(int(np.ceil(margin_mm / s)) for s in spacing_zyx)  # type: ignore[return-value]


def body_box(image: np.ndarray, threshold_hu: float = -500.0) -> Box:
    """Box of the largest connected region above ``threshold_hu`` (the patient's body)."""
    from flarecli.core.postprocessing.components import largest_component

    body = largest_component(image > threshold_hu, connectivity=6)
    if body is None:
        return tuple((0, s) for s in image.shape)  # type: ignore[return-value]
    return box_of(body)  # type: ignore[return-value]


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    return array[tuple(slice(a, b) for a, b in box)]


def resample(array, size_zyx, mode: str):
    """Resample a 3-D numpy array or torch tensor to ``size_zyx``.

    ``mode``: 'linear' (trilinear, float32 result) or 'nearest' (dtype kept; used for label
    maps, never for logits). Returns a torch tensor on the input's device.
    """
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(array) if isinstance(array, np.ndarray) else array
    size = tuple(int(s) for s in size_zyx)
    if tuple(t.shape) == size:
        return t.float() if mode == "linear" else t
    if mode == "linear":
        return F.interpolate(t.float()[None, None], size=size, mode="trilinear",
                             align_corners=False)[0, 0]
    if mode == "nearest":
        src = t if t.dtype == torch.uint8 else t.float()
        out = F.interpolate(src[None, None], size=size, mode="nearest-exact")[0, 0]
        return out.to(t.dtype)
    raise ValueError(f"unknown resampling mode {mode}")


# ---------------------------------------------------------------------------------------------
# stages and the preprocessed-array cache
# ---------------------------------------------------------------------------------------------

STAGES: tuple[str, ...] = ("coarse", "fine")


@dataclass(frozen=True)
class StageSpec:
    """How one stage sees a scan.

    coarse: the whole volume at ``size_zyx``. fine: the ROI (foreground box + ``margin_mm``)
    maps to ``size_zyx``; the cache keeps ``context`` x the ROI size of extra image around it
    on each side so training can jitter and enlarge the box (mimicking coarse-stage error).
    """

    stage: str
    size_zyx: tuple[int, int, int]
    margin_mm: float = 10.0
    context: float = 0.15

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "size_zyx": list(self.size_zyx),
                "margin_mm": self.margin_mm, "context": self.context}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageSpec:
        return cls(d["stage"], tuple(int(v) for v in d["size_zyx"]), float(d["margin_mm"]),
                   float(d["context"]))


def roi_box(label: np.ndarray, image: np.ndarray, spacing_zyx, margin_mm: float) -> Box:
    """The fine-stage ROI of a training case: box of the organ annotation (label 1..13) plus
    the margin; for a case without organs (e.g. tumor-only labels) the body's box."""
    organs = (label > 0) & (label < 14)
    box = box_of(organs) if organs.any() else None
    if box is None:
        return body_box(image)
    return expand_box(box, margin_voxels(margin_mm, spacing_zyx), label.shape)


def preprocess_case(image: np.ndarray, label: np.ndarray | None, geometry,
                    intensity: Intensity, spec: StageSpec) -> dict[str, Any]:
    """Arrays a stage trains on: normalised float16 image, uint8 label (FLARE ids kept), and
    the ROI inside them as a box in the returned arrays' voxel coordinates. Arrays are first
    brought to the canonical orientation (core.orient)."""
    from flarecli.core.preprocessing.orientation import to_canonical

    r = to_canonical(geometry.direction)
    image = r.apply(image)
    label = None if label is None else r.apply(label)
    spacing_zyx = r.spacing(geometry.spacing_zyx)
    norm = intensity.apply(image)
    if spec.stage == "coarse":
        img = resample(norm, spec.size_zyx, "linear").numpy()
        lab = None if label is None else resample(label.astype(np.uint8), spec.size_zyx,
                                                  "nearest").numpy()
        roi: Box = tuple((0, s) for s in spec.size_zyx)  # type: ignore[assignment]
    else:
        base = roi_box(label if label is not None else np.zeros(image.shape, np.uint8), image,
                       spacing_zyx, spec.margin_mm)
        ctx = tuple(int(np.ceil((b - a) * spec.context)) for a, b in base)
        outer = expand_box(base, ctx, image.shape)
        scale = [spec.size_zyx[i] / (base[i][1] - base[i][0]) for i in range(3)]
        shape = [max(1, round((outer[i][1] - outer[i][0]) * scale[i])) for i in range(3)]
        img = resample(crop(norm, outer), shape, "linear").numpy()
        lab = None if label is None else resample(crop(label.astype(np.uint8), outer), shape,
                                                  "nearest").numpy()
        roi = tuple((round((base[i][0] - outer[i][0]) * scale[i]),
                     round((base[i][1] - outer[i][0]) * scale[i])) for i in range(3))  # type: ignore
    return {"image": img.astype(np.float16), "label": lab,
            "roi": np.asarray(roi, np.int64)}


def cache_key(spec: StageSpec, intensity: Intensity, label_path: Path | None) -> str:
    """Changes whenever the stage, the normalisation or the label file changes."""
    stat = label_path.stat() if label_path is not None else None
    data = {"spec": spec.to_json(), "intensity": intensity.to_json(),
            "label": [str(label_path), stat.st_size, stat.st_mtime_ns] if stat else None,
            "version": 2}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def save_cached(path: Path, arrays: dict[str, Any]) -> None:
    from flarecli.core.io.nifti import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})


def load_cached(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
