"""Training data: the validation split, the batch sampler, and the per-sample pipeline (a
jittered ROI resampled to a fixed size, or a random patch), with augmentation.

Labels stay FLARE ids until the loss: each head maps them to its own classes with
:func:`flarecli.core.recipes.heads.head_lut`, so one cached case serves every head and stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flarecli.core.errors import InputError
from flarecli.core.recipes import spec as S


def split_validation(ids: list[str], candidates: set[str], fraction: float, seed: int
                     ) -> tuple[list[str], list[str]]:
    """Deterministic hold-out among ``candidates`` (at least one when fraction > 0 and there
    are >= 2). Returns (training ids, validation ids), both in the order of ``ids``."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"val_fraction {fraction}: must be in [0, 1)")
    pool = [i for i in ids if i in candidates]
    n_val = int(round(len(pool) * fraction))
    if fraction > 0 and n_val == 0 and len(pool) >= 2:
        n_val = 1
    order = np.random.default_rng(seed).permutation(len(pool))
    val = {pool[i] for i in order[:n_val]}
    return [i for i in ids if i not in val], [i for i in ids if i in val]


class KindBalancedSampler:
    """Batches whose samples cycle over the kinds present (FL, CPL, PL): equal proportions.

    Sample j of step t in an epoch has kind ``kinds[(t * batch + j) % len(kinds)]`` and a case
    drawn uniformly from that kind (give one kind for all cases to sample uniformly).
    Everything is a function of (seed, rank, epoch), so a run resumed at an epoch boundary
    sees exactly the same samples, and every rank of a distributed run sees different ones.
    """

    ORDER: tuple[str, ...] = ("FL", "CPL", "PL", "partial", "unlabeled", "all")

    def __init__(self, kinds: list[str], batch_size: int, steps: int, seed: int,
                 rank: int = 0) -> None:
        self.by_kind: dict[str, list[int]] = {}
        for i, k in enumerate(kinds):
            self.by_kind.setdefault(k, []).append(i)
        self.kinds = [k for k in self.ORDER if k in self.by_kind]
        self.batch_size, self.steps, self.seed, self.rank = batch_size, steps, seed, rank

    def epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        batches = []
        for t in range(self.steps):
            batch = []
            for j in range(self.batch_size):
                pool = self.by_kind[self.kinds[(t * self.batch_size + j) % len(self.kinds)]]
                batch.append((int(pool[rng.integers(len(pool))]), int(rng.integers(2**31))))
            batches.append(batch)
        return batches


# ---------------------------------------------------------------------------------------------
# per-sample pipeline (runs in loader workers on CPU, or on the GPU in the main process)
# ---------------------------------------------------------------------------------------------

def sample_box(roi: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """A jittered version of the ROI box (float [start, stop) per axis): enlarged by up to
    ``2 * jitter`` of its size and shifted by up to ``jitter / 2`` of it."""
    roi = roi.astype(np.float64)
    size = roi[:, 1] - roi[:, 0]
    if jitter <= 0:
        return roi
    new = size * rng.uniform(1.0, 1.0 + 2 * jitter, 3)
    centre = roi.mean(1) + size * rng.uniform(-jitter / 2, jitter / 2, 3)
    return np.stack([centre - new / 2, centre + new / 2], 1)


def box_grid(box: np.ndarray, source_shape, size_zyx, device):
    """grid_sample grid mapping an output of ``size_zyx`` onto ``box`` of a source array."""
    import torch

    axes = []
    for ax in range(3):
        n = size_zyx[ax]
        pos = box[ax, 0] + (np.arange(n) + 0.5) * (box[ax, 1] - box[ax, 0]) / n
        axes.append(torch.as_tensor(2 * pos / source_shape[ax] - 1, dtype=torch.float32,
                                    device=device))
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)[None]


def patch_start(arrays: dict[str, np.ndarray], rng: np.random.Generator,
                patch_zyx: Sequence[int], foreground_fraction: float,
                focus: dict[str, float] | None = None) -> np.ndarray:
    """Start corner of a random patch: holding a labelled voxel with probability
    ``foreground_fraction`` (when the case has any; a class present is drawn first, then one
    of its voxels, as nnU-Net does), else anywhere. May lie outside the array (the patch is
    padded).

    The labelled voxel lands anywhere in the patch, not at its centre: a network that only
    ever saw its targets in the middle of the patch learns the position instead of the
    target (measured: a tumor model found a lesion at the centre of a tile with p 0.99 and
    the same lesion 6 voxels off-centre with p 0.0003, so a sliding window found none)."""
    shape = np.asarray(arrays["image"].shape)
    patch = np.asarray(patch_zyx)
    foreground = arrays.get("foreground")
    owners = arrays.get("foreground_class")
    draw = rng.uniform()
    chosen = None
    for c, share in (focus or {}).items():  # classes with a share of their own
        if draw < share:
            chosen = c
            break
        draw -= share
    if chosen is not None and owners is not None and (owners == int(chosen)).any():
        pool = np.flatnonzero(owners == int(chosen))
        point = foreground[pool[rng.integers(len(pool))]]
        return point - np.array([rng.integers(p) for p in patch])
    pick_fg = rng.uniform() < foreground_fraction
    if pick_fg and foreground is not None and len(foreground):
        if owners is not None and len(owners) == len(foreground):  # a class, then a voxel
            present = np.unique(owners)
            pool = np.flatnonzero(owners == present[rng.integers(len(present))])
            point = foreground[pool[rng.integers(len(pool))]]
        else:
            point = foreground[rng.integers(len(foreground))]
        return point - np.array([rng.integers(p) for p in patch])
    high = np.maximum(shape - patch, 0)
    start = np.array([rng.integers(h + 1) for h in high])
    return start - np.maximum(patch - shape, 0) // 2


def crop_patch(array: np.ndarray, start: np.ndarray, patch_zyx: Sequence[int],
               fill: float) -> np.ndarray:
    """``array[start : start + patch]``, padded with ``fill`` where it leaves the array."""
    out = np.full(tuple(patch_zyx), fill, array.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch_zyx, array.shape, strict=True):
        a, b = max(0, int(s)), min(n, int(s) + p)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(s), b - int(s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def make_sample(arrays: dict[str, np.ndarray], seed: int, geometry: S.StageGeometry,
                augment_config, device, train: bool = True, swap_lr=None,
                lesions: S.SyntheticLesions | None = None):
    """(image (1, D, H, W) float32, label (D, H, W) int64 of FLARE ids) for one cached case.

    ``geometry``: the stage's :class:`~flarecli.core.recipes.spec.StageGeometry`. A fixed-size stage
    samples its (jittered) ROI box at ``size_zyx``; a patch stage takes a random patch of
    ``patch_zyx`` (in validation: the patch around the ROI centre). ``swap_lr``: for a
    left-right mirror, the LUT that swaps the left/right organ ids. ``lesions``: synthetic
    lesions painted in (training only) before the other augmentation.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    if geometry.size_zyx is not None:
        size = tuple(geometry.size_zyx)
        image = torch.as_tensor(np.array(arrays["image"]), device=device).float()
        label = torch.as_tensor(np.array(arrays["label"]), device=device)
        box = sample_box(arrays["roi"], rng, geometry.jitter if train else 0.0)
        grid = box_grid(box, image.shape, size, device)
        img = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
        lab = F.grid_sample(label[None, None].float(), grid, mode="nearest",
                            padding_mode="zeros", align_corners=False)[0, 0].long()
        scale = (box[:, 1] - box[:, 0]) / np.asarray(size)
    else:
        size = tuple(geometry.patch_zyx)
        if train:
            start = patch_start(arrays, rng, size, geometry.foreground_fraction,
                                geometry.focus)
        else:
            centre = arrays["roi"].mean(1).astype(np.int64)
            start = centre - np.asarray(size) // 2
        fill = float(arrays["fill"])
        img = torch.as_tensor(crop_patch(arrays["image"], start, size, fill),
                              device=device).float()[None]
        lab = torch.as_tensor(crop_patch(arrays["label"], start, size, 0), device=device).long()
        scale = np.ones(3)
    if train and lesions is not None:
        from flarecli.core.training.augment.lesions import paint_lesions, sample_lesions

        img, lab = paint_lesions(img, lab, sample_lesions(rng, lesions), lesions,
                                 tuple(arrays["spacing"] * scale), float(arrays["unit_per_hu"]))
    if train and augment_config is not None:
        from flarecli.core.training import augment

        params = augment.sample_params(rng, augment_config, size)
        img, lab = augment.apply(img, lab, params)
        if swap_lr is not None and params.flip_axes and swap_lr[0] in params.flip_axes:
            lab = torch.as_tensor(swap_lr[1], device=lab.device)[lab]
    return img, lab
