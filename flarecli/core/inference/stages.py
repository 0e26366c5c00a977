"""Running one trained stage on a region of a scan.

A region (a box of the scan in the canonical orientation, possibly reaching past the scan
when the stage pads) is cropped, turned to the stage's orientation, normalised, resampled
to the stage's grid (its fixed size, or its inference spacing), and run through the network:
in one pass for a fixed-size stage, by a Gaussian-weighted sliding window of the stage's
patch otherwise (2-D networks take the patch's slices as a batch). Each head's argmax at grid
resolution is resampled back by nearest neighbour -- a label map, never logits -- and the
orientation undone.

Mirror TTA averages the softmax over the flips the stage was trained with (its augmentation
mirrors); a left-right flip also swaps the left/right organ classes of each head.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.inference import arrays as A
from flarecli.core.inference.backends import Backend, BackendChoice, make_backend
from flarecli.core.inference.int8 import Int8Calibration
from flarecli.core.inference.profiling import step
from flarecli.core.inference.sure import SURE, labels_kind, sure_from_probabilities
from flarecli.core.io.bundle import (
    bundle_stage,
    network_of,
    read_bundle,
    verified_weights,
    weights_entry,
)
from flarecli.core.labels import LR_SWAP
from flarecli.core.preprocessing.boxes import Box, crop
from flarecli.core.preprocessing.intensity import Intensity
from flarecli.core.preprocessing.orientation import (
    CANONICAL,
    Reorientation,
    array_axis,
    direction_of,
    to_orientation,
)
from flarecli.core.preprocessing.resample import resample, size_at_spacing
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import head_ids

#: Most tiles per forward pass of a sliding window (2-D slices are cheap, 3-D patches not).
TILES_PER_BATCH = {2: 32, 3: 1}


@dataclass
class LoadedStage:
    """A bundle ready to run: its stage as trained, backend, intensity and class maps."""

    name: str
    folder: Path
    meta: dict[str, Any]
    stage: S.Stage
    intensity: Intensity
    backend: Backend
    dims: int
    which: str  # the weights used: 'best' or 'final'

    @property
    def sha256(self) -> str:
        return self.meta["weights"][self.which]["sha256"]

    @property
    def orient(self) -> Reorientation:
        """Canonical array order -> the stage's array order."""
        return to_orientation(direction_of(CANONICAL).ravel(), self.stage.orientation)

    def ids(self, head: str) -> np.ndarray:
        """uint8 lookup head class -> FLARE id."""
        return head_ids(self.stage.network.heads[head])

    def views(self, tta: bool) -> list[tuple[int, ...]]:
        """The array axes (stage orientation) flipped by each TTA view; () = the scan."""
        if not tta or self.stage.augmentation is None:
            return [()]
        axes = sorted(array_axis(self.stage.orientation, m)
                      for m in self.stage.augmentation.mirror)
        if self.dims == 2:  # slices: a flip along the slice axis changes nothing
            axes = [a for a in axes if a != 0]
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def load_stage(name: str, folder: Path, device, which: str | None = None,
               choice: BackendChoice | None = None, notes: Callable[[str], None] | None = None,
               fallbacks: list[str] | None = None, probabilities: bool = True,
               calibration: Int8Calibration | None = None,
               progress: Callable[[str], None] | None = None,
               sure: dict[str, float] | None = None) -> LoadedStage:
    """A bundle's stage on the backend ``choice`` asks for (a BackendChoice; default: torch).
    The weights' checksum is verified before any backend sees them; the torch network is
    built only when a backend needs it (not for an OpenVINO model found in the cache, which
    was compiled from these very weights). ``probabilities``: the run will average or score
    this stage's softmax (TTA, confidence); without, a fixed-size stage only needs each
    head's argmax, and the sure labels of ``sure`` (head -> probability: the merge rule's).
    ``progress``: told when an OpenVINO compilation starts and ends."""
    meta = read_bundle(folder)
    path = verified_weights(folder, meta, which)
    stage, intensity = bundle_stage(folder, meta)
    chosen, entry = weights_entry(folder, meta, which)
    heads = tuple(stage.network.heads)
    dims = int(meta["architecture"].get("args", {}).get("dims", 3))
    model = functools.cache(lambda: network_of(path, meta, str(device)))
    key = {"weights_sha256": entry["sha256"], "architecture": meta["architecture"],
           "heads": list(heads)}
    outputs = labels_kind(sure) if stage.geometry.size_zyx is not None and not probabilities \
        else "logits"
    backend = make_backend(model, device, heads, stage.precision, network_input(stage, dims),
                           key, choice or BackendChoice("torch"), notes, str(folder),
                           fallbacks, outputs, calibration, progress)
    return LoadedStage(name, Path(folder), meta, stage, intensity, backend, dims, chosen)


def stage_spec(folder: Path) -> S.Stage:
    """A bundle's stage as trained (its model.json alone: no weights are read)."""
    return bundle_stage(folder, read_bundle(folder))[0]


def network_input(stage: S.Stage, dims: int) -> tuple[int, ...]:
    """The shape the network is run at: (1, 1, *size) for a fixed-size stage, (1, 1, *patch)
    for a sliding window; a 2-D network takes a varying batch of slices (-1, 1, Y, X)."""
    g = stage.geometry
    spatial = tuple(g.size_zyx if g.size_zyx is not None else g.patch_zyx)
    if dims == 2:
        return (-1, 1, *spatial[1:])
    return (1, 1, *spatial)


# ---------------------------------------------------------------------------------------------
# network passes
# ---------------------------------------------------------------------------------------------

def _lr_permutation(stage: S.Stage, head: str) -> list[int]:
    """Channel order of a head after a left-right mirror (left/right organs swapped)."""
    classes = stage.network.heads[head]
    index = {c: k for k, c in enumerate(classes, start=1) if isinstance(c, int)}
    perm = list(range(len(classes) + 1))
    for c, k in index.items():
        other = int(LR_SWAP[c])
        if other in index:
            perm[k] = index[other]
    return perm


def _softmax(ls: LoadedStage, batch: np.ndarray, view: tuple[int, ...]):
    """Per-head softmax of one view of a (B, 1, D, H, W) batch, flipped back (arrays of the
    backend's kind: :mod:`flarecli.core.inference.arrays`)."""
    x = batch[:, :, 0] if ls.dims == 2 else batch
    dims = [a + 2 - (1 if ls.dims == 2 else 0) for a in view]
    out = ls.backend(np.ascontiguousarray(A.flip(x, dims)))
    lr = array_axis(ls.stage.orientation, "LR") in view
    result = {}
    for head, y in out.items():
        y = A.softmax(y, axis=1)
        if dims:
            y = A.flip(y, dims)
            if lr:
                y = y[:, _lr_permutation(ls.stage, head)]
        result[head] = y[:, :, None] if ls.dims == 2 else y
    return result


def _gaussian(patch: tuple[int, ...]) -> np.ndarray:
    """nnU-Net's tile weighting: a Gaussian of sigma = patch / 8, smallest weights clamped."""
    w = np.ones(patch, np.float32)
    for axis, n in enumerate(patch):
        if n == 1:
            continue
        x = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2)
        g = np.exp(np.float32(-0.5) * (x / np.float32(n / 8)) ** 2)
        shape = [1] * len(patch)
        shape[axis] = n
        w = w * g.reshape(shape)
    w = w / w.max()
    return np.maximum(w, np.float32(1e-3))


def tile_starts(n: int, p: int, overlap: float) -> list[int]:
    """Start positions of tiles of size ``p`` covering ``n`` voxels with ``overlap``."""
    if n <= p:
        return [0]
    steps = int(np.ceil((n - p) / (p * (1 - overlap)))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, n - p, steps)})


def sliding_window(ls: LoadedStage, volume: np.ndarray, views: list[tuple[int, ...]]
                   ) -> dict[str, np.ndarray]:
    """Softmax per head (C, Z, Y, X), averaged over tiles (Gaussian weights) and views.
    ``volume``: the normalised region at the stage's grid (float32)."""
    patch = tuple(ls.stage.geometry.patch_zyx)
    shape = tuple(volume.shape)
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    if padded != shape:
        volume = np.pad(volume, [((p - s) // 2, p - s - (p - s) // 2)
                                 for s, p in zip(shape, padded, strict=True)],
                        constant_values=float(volume.min()))
    starts = list(itertools.product(*(tile_starts(n, p, ls.stage.geometry.overlap)
                                      for n, p in zip(padded, patch, strict=True))))
    weight = _gaussian(patch)
    sums: dict[str, np.ndarray] = {}
    norm = np.zeros(padded, np.float32)
    per_batch = TILES_PER_BATCH[ls.dims]
    for i in range(0, len(starts), per_batch):
        chunk = starts[i:i + per_batch]
        tiles = [tuple(slice(a, a + p) for a, p in zip(s, patch, strict=True)) for s in chunk]
        batch = np.stack([volume[t] for t in tiles])[:, None]
        for view in views:
            for head, probs in _softmax(ls, batch, view).items():
                probs = A.to_numpy(probs)
                acc = sums.setdefault(head, np.zeros((probs.shape[1], *padded), np.float32))
                for j, t in enumerate(tiles):
                    acc[(slice(None), *t)] += probs[j] * weight
        for t in tiles:
            norm[t] += weight * len(views)
    inner = tuple(slice((p - s) // 2, (p - s) // 2 + s) for s, p in zip(shape, padded,
                                                                        strict=True))
    return {h: (acc / norm)[(slice(None), *inner)] for h, acc in sums.items()}


def across_slices(probs: np.ndarray, sigma_slices: float) -> np.ndarray:
    """Probabilities (C, Z, Y, X) smoothed along Z by a Gaussian of ``sigma_slices``
    slices (each class alone: they still sum to one)."""
    from scipy.ndimage import gaussian_filter1d
    return gaussian_filter1d(probs, sigma_slices, axis=1, mode="nearest", truncate=3.0)


def network_labels(ls: LoadedStage, net_in: np.ndarray, tta: bool,
                   stats: dict[str, Any] | None = None, sure: dict[str, float] | None = None,
                   slice_mm: float | None = None) -> dict[str, np.ndarray]:
    """Argmax per head at the stage's grid (uint8 NumPy arrays). ``stats`` (when given)
    receives the first head's confidence and, with TTA, the views' agreement. ``sure``: head
    -> probability; for each, key ``head + SURE`` holds the head's labels where the chosen
    class has at least that probability, 0 elsewhere. ``slice_mm``: the grid's slice
    spacing, for the geometry's ``slice_sigma_mm``."""

    views = ls.views(tta)
    if ls.stage.geometry.size_zyx is None:
        probs = sliding_window(ls, net_in, views)
        sigma = ls.stage.geometry.slice_sigma_mm
        if sigma > 0 and slice_mm:
            probs = {h: across_slices(p, sigma / slice_mm) for h, p in probs.items()}
        view_labels: list[Any] = []
    elif len(views) == 1 and stats is None:  # the backend's argmax (and sure labels)
        out = ls.backend.labels(net_in[None, None], sure or None)
        return {h: A.to_numpy(y[0]) for h, y in out.items()}
    else:
        total: dict[str, Any] = {}
        view_labels = []
        for view in views:
            out = _softmax(ls, net_in[None, None], view)
            for h, p in out.items():
                total[h] = p if h not in total else total[h] + p
            if len(views) > 1:
                view_labels.append(A.to_numpy(A.argmax_labels(next(iter(out.values()))))[0])
        probs = {h: (t / len(views))[0] for h, t in total.items()}
    labels = {h: A.to_numpy(A.argmax_labels(p[None]))[0] for h, p in probs.items()}
    for head, minimum in (sure or {}).items():
        labels[head + SURE] = sure_from_probabilities(probs[head], labels[head], minimum)
    if stats is not None:
        first = next(iter(labels))
        fg = labels[first] > 0
        top = A.to_numpy(A.top(probs[first], 0))
        stats["confidence"] = float(top[fg].mean()) if fg.any() else 0.0
        if view_labels:
            agree = []
            for v in view_labels:
                union = (v > 0) | fg
                agree.append(float((v[union] == labels[first][union]).mean())
                             if union.any() else 1.0)
            stats["agreement"] = float(np.mean(agree))
    return labels


# ---------------------------------------------------------------------------------------------
# a stage on a region
# ---------------------------------------------------------------------------------------------

def grid_shape(ls: LoadedStage, shape_zyx, spacing_zyx) -> tuple[int, int, int]:
    """The stage's grid for a region of this shape and spacing (stage orientation)."""
    g = ls.stage.geometry
    if g.size_zyx is not None:
        return tuple(g.size_zyx)  # type: ignore[return-value]
    return size_at_spacing(shape_zyx, spacing_zyx, g.spacing(training=False))


def grid_slice_mm(net_in: np.ndarray, shape_zyx, spacing_zyx) -> float | None:
    """The slice spacing (mm) of a stage's grid ``net_in`` for a region of ``shape_zyx``
    at ``spacing_zyx`` (both in the stage's orientation); None for an empty grid."""
    return shape_zyx[0] * spacing_zyx[0] / net_in.shape[0] if net_in.shape[0] else None


def prepare(ls: LoadedStage, image: np.ndarray, box: Box, spacing_zyx, fill: float,
            memo: dict | None = None):
    """(network input at the stage's grid, the region's shape and spacing in the stage's
    orientation, the reorientation) for a canonical image and box. Stages that read the same
    region the same way (StMt's organ and tumor models) share one input through ``memo``."""
    r = ls.orient
    key = (box, r.perm, r.flips, ls.intensity, ls.stage.geometry.size_zyx,
           ls.stage.geometry.spacing(training=False) if ls.stage.geometry.size_zyx is None
           else None)
    if memo is not None and key in memo:
        return memo[key]
    with step("crop"):
        region = r.apply(crop(image, box, fill))
    spacing = r.spacing(spacing_zyx)
    with step("normalise"):
        norm = ls.intensity.apply(region)
    with step("resample to network"):
        net_in = resample(norm, grid_shape(ls, region.shape, spacing), "linear")
    del norm
    result = (net_in, region.shape, r)
    if memo is not None:
        memo[key] = result
    return result


def segment(ls: LoadedStage, image: np.ndarray, box: Box, spacing_zyx, fill: float,
            tta: bool, stats: dict[str, Any] | None = None, memo: dict | None = None,
            sure: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Each head's labels (network classes, uint8) on ``box`` of the canonical image (and
    sure labels: :func:`network_labels`)."""
    net_in, shape, r = prepare(ls, image, box, spacing_zyx, fill, memo)
    with step(f"network {ls.name}"):
        labels = network_labels(ls, net_in, tta, stats, sure,
                                grid_slice_mm(net_in, shape, r.spacing(spacing_zyx)))
    with step("resample to the scan"):
        return {h: r.invert(resample(v, shape, "nearest")) for h, v in labels.items()}


def invert_box(box: Box, r: Reorientation, oriented_shape) -> Box:
    """A box of an array reoriented by ``r`` (``r.apply``) as a box of the original array."""
    out: list[tuple[int, int]] = [(0, 0)] * 3
    for c, (a, b) in enumerate(box):
        n = int(oriented_shape[c])
        out[r.perm[c]] = (n - b, n - a) if r.flips[c] else (a, b)
    return tuple(out)  # type: ignore[return-value]
