"""Preprocessed training arrays, cached once per case and stage geometry.

A case is brought to the stage's orientation, its region cropped (the whole scan, or the
ROI: the organ annotation's box plus the margin, with ``context`` of extra image around it so
training can jitter the box), normalised, and resampled -- to the fixed size (the ROI maps to
``size_zyx``) or to the training spacing. The cache holds float16 images, uint8 labels in
FLARE ids, the ROI box in the cached grid, the grid's spacing (mm, zyx) and the normalised
units per HU (what synthetic lesions need to be drawn in mm and HU), and for patch stages up
to 2,000 labelled voxel positions per class to centre foreground patches on; and the value
that pads a patch reaching past the cached region. An entry is one uncompressed .npz,
written atomically; its image and label are memory-mapped when read (:func:`load_cached`).

Cache files are keyed by the geometry, orientation, intensity and the label file's identity
(path, size, modification time), so a changed label or setting never reuses a stale entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import FlareError
from flarecli.core.io.geometry import Geometry
from flarecli.core.preprocessing.boxes import (
    Box,
    body_box,
    box_of,
    crop,
    expand_box,
    margin_voxels,
    pad_to_aspect,
    whole,
)
from flarecli.core.preprocessing.intensity import Intensity
from flarecli.core.preprocessing.resample import resample, size_at_spacing
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import every_class
from flarecli.core.recipes.typed import to_json

CACHE_VERSION = 7
#: Members of a cache entry at least this large are memory-mapped, not read (bytes).
MAP_AT_BYTES = 1 << 16
MAX_FOREGROUND_POINTS = 2000  # per class


def training_roi(label: np.ndarray, image: np.ndarray, spacing_zyx, margin_mm: float) -> Box:
    """The ROI of a training case: box of the organ annotation (labels 1..13) plus the
    margin -- what a trained ROI stage finds -- or, for a case without organs (tumor-only
    labels), the body's box."""
    organs = (label > 0) & (label < 14)
    box = box_of(organs) if organs.any() else None
    if box is None:
        return body_box(image)
    return expand_box(box, margin_voxels(margin_mm, spacing_zyx), label.shape)


def _outer(base: Box, context: float, shape) -> Box:
    """``base`` grown by ``context`` of its size per side, clipped to the array -- but never
    inside ``base`` itself, which may reach beyond the array when padded."""
    ctx = [int(np.ceil((b - a) * context)) for a, b in base]
    return tuple((min(a, max(0, a - c)), max(b, min(int(n), b + c)))
                 for (a, b), c, n in zip(base, ctx, shape, strict=True))  # type: ignore


def _normalise(image: np.ndarray, region: Box, outer: Box, intensity: Intensity
               ) -> tuple[np.ndarray, float]:
    """The outer crop normalised, and the normalised units per HU; a per-image z-score
    takes its statistics from ``region`` (what the network sees at inference), the crop
    itself otherwise."""
    fill = float(image.min()) if image.size else 0.0
    raw = crop(image, outer, fill)
    if intensity.mode != "zscore_image":
        return intensity.apply(raw), 1.0 / intensity.std
    seen = crop(image, region, fill).astype(np.float32)
    mean, std = float(seen.mean(dtype=np.float64)), float(seen.std(dtype=np.float64))
    fixed = Intensity("zscore_image_fixed", None, None, mean, max(std, 1e-3))
    return fixed.apply(raw), 1.0 / fixed.std


def preprocess_case(image: np.ndarray, label: np.ndarray, geometry: Geometry,
                    intensity: Intensity, stage: S.Stage, rng_seed: int = 0) -> dict[str, Any]:
    """The arrays a stage trains on (see the module docstring); ``stage`` is a recipe Stage."""
    from flarecli.core.preprocessing.orientation import to_orientation

    r = to_orientation(geometry.direction, stage.orientation)
    image, label = r.apply(image), r.apply(label)
    spacing_zyx = r.spacing(geometry.spacing_zyx)
    g = stage.geometry
    if g.region == "whole":
        base = whole(image.shape)
        outer = base
    else:
        base = training_roi(label, image, spacing_zyx, g.margin_mm)
        if g.pad == "aspect":
            base = pad_to_aspect(base, spacing_zyx, g.size_zyx)
        outer = _outer(base, g.context, image.shape)
    norm, unit_per_hu = _normalise(image, base, outer, intensity)
    lab = crop(label.astype(np.uint8, copy=False), outer, 0)
    outer_shape = [b - a for a, b in outer]
    if g.size_zyx is not None:
        scale = [g.size_zyx[i] / (base[i][1] - base[i][0]) for i in range(3)]
        shape = [max(1, round(outer_shape[i] * scale[i])) for i in range(3)]
    else:
        shape = list(size_at_spacing(outer_shape, spacing_zyx, g.spacing(training=True)))
        scale = [shape[i] / outer_shape[i] for i in range(3)]
    img = resample(norm, shape, "linear")
    lab = resample(lab, shape, "nearest")
    roi = tuple((round((base[i][0] - outer[i][0]) * scale[i]),
                 round((base[i][1] - outer[i][0]) * scale[i])) for i in range(3))
    image16 = img.astype(np.float16)
    arrays: dict[str, Any] = {"image": image16, "label": lab,
                              "fill": np.float32(image16.min() if image16.size else 0.0),
                              "roi": np.asarray(roi, np.int64),
                              "spacing": np.asarray([spacing_zyx[i] / scale[i] for i in range(3)],
                                                    np.float64),
                              "unit_per_hu": np.float64(unit_per_hu)}
    if g.size_zyx is None:
        arrays.update(foreground_points(lab, stage_classes(stage), rng_seed))
    return arrays


def foreground_points(label: np.ndarray, classes: set[int], seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """Where foreground patches may be placed: up to MAX_FOREGROUND_POINTS voxels of each of
    ``classes`` present (``foreground``, int32 (N, 3)) and the class of each
    (``foreground_class``). Kept per class so that a small class (a 1 ml lesion beside a
    liver) is drawn as often as a large one."""
    rng = np.random.default_rng(seed)
    points, owners = [], []
    for c in sorted(classes):
        found = np.argwhere(label == c)
        if len(found) > MAX_FOREGROUND_POINTS:
            found = found[np.sort(rng.choice(len(found), MAX_FOREGROUND_POINTS,
                                             replace=False))]
        points.append(found)
        owners.append(np.full(len(found), c, np.uint8))
    if not points:
        return {"foreground": np.zeros((0, 3), np.int32),
                "foreground_class": np.zeros(0, np.uint8)}
    return {"foreground": np.concatenate(points).astype(np.int32),
            "foreground_class": np.concatenate(owners)}


def stage_classes(stage: S.Stage) -> set[int]:
    """Every FLARE id a stage's heads predict (merged entries included)."""
    return set().union(*map(every_class, stage.network.heads.values()))


def cache_key(stage: S.Stage, intensity: Intensity, image_path: Path, label_path: Path
              ) -> str:
    """Changes whenever the geometry, orientation, normalisation, the classes foreground
    patches centre on, the image or the label file changes."""
    from flarecli.core.io.files import file_identity

    data = {"geometry": to_json(stage.geometry), "orientation": stage.orientation,
            "classes": sorted(stage_classes(stage)),
            "intensity": intensity.to_json(),
            "image": file_identity(image_path), "label": file_identity(label_path),
            "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def save_cached(path: Path, arrays: dict[str, Any]) -> None:
    from flarecli.core.io.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})


def load_cached(path: Path) -> dict[str, np.ndarray]:
    """A cache entry's arrays; the large ones (image, label) memory-mapped read-only, so that
    a patch stage reads the pages of its patch and not the whole case for every sample (6 ms
    per sample of a 2-D tumor stage, a third of its step, measured on the demo). The entry is
    the uncompressed .npz :func:`save_cached` writes, whose members lie in the file as .npy
    data; one stored otherwise is read whole. A mapped member skips the zip's CRC check (a
    truncated entry still fails to open); entries are written atomically and never edited."""
    import struct
    import zipfile

    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED or info.file_size < MAP_AT_BYTES:
                with archive.open(info) as member:
                    out[name] = np.lib.format.read_array(member)
                continue
            f.seek(info.header_offset + 26)  # the local header's name and extra lengths
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                  order="F" if fortran else "C")
    return out


@dataclass(frozen=True)
class CacheJob:
    """One case to preprocess into ``path`` (a picklable job for worker processes)."""

    case_id: str
    image: str
    label: str
    path: str
    stage: S.Stage
    intensity: Intensity


def build_cache_entry(job: CacheJob) -> str | None:
    """Preprocess one case into the cache (skipped when present); returns an error or None."""
    from flarecli.core.io.nifti import read_label_map, read_volume

    path = Path(job.path)
    if path.exists():
        return None
    try:
        image, geometry = read_volume(Path(job.image))
        label, label_geometry = read_label_map(Path(job.label))
        mismatch = geometry.mismatches(label_geometry)
        if mismatch:
            return f"{job.case_id}: image vs label {'; '.join(mismatch)}"
        save_cached(path, preprocess_case(image, label, geometry, job.intensity, job.stage))
        return None
    except FlareError as e:
        return f"{job.case_id}: {e}"
