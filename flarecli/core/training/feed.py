"""How samples reach the network: the cached arrays as a torch dataset, augmentation (and the
left-right label swap), per-head lookup tables, 2-D or 3-D input, loader workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flarecli.core.labels import LR_SWAP
from flarecli.core.preprocessing.orientation import array_axis
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import head_lut
from flarecli.core.recipes.typed import RecipeError
from flarecli.core.runtime import usable_cpus
from flarecli.core.training import data as D
from flarecli.core.training.cache import load_cached
from flarecli.core.training.context import Context
from flarecli.core.training.network import channels_last
from flarecli.core.training.options import TrainRun

if TYPE_CHECKING:  # augment imports torch, which loads when a run starts
    from flarecli.core.training.augment import AugmentConfig

#: A left-right mirror's label swap: the array axis it flips, and the FLARE id lookup.
Swap = tuple[int, np.ndarray]


def augment_config(stage: S.Stage) -> tuple[AugmentConfig | None, Swap | None]:
    """The AugmentConfig of a stage (None without augmentation) and the left-right label swap
    (array axis, LUT) when a left-right mirror is among its flips."""
    if stage.augmentation is None:
        return None, None
    from flarecli.core.training.augment import AugmentConfig

    a = stage.augmentation
    axes = {name: array_axis(stage.orientation, name) for name in S.ANATOMICAL_AXES}
    fields = {**a.settings, "flip_axes": tuple(sorted(axes[m] for m in a.mirror)),
              "rotation_axes": tuple(sorted(axes[r] for r in a.rotation_about))}
    try:
        config = (AugmentConfig(**fields) if a.base == "nnunet" else
                  AugmentConfig.none(**{"p_flip": AugmentConfig.p_flip, **fields}))
    except (TypeError, ValueError) as e:
        raise RecipeError("augmentation.settings", str(e)) from None
    swap = (axes["LR"], LR_SWAP) if "LR" in a.mirror else None
    return config, swap


@dataclass
class Feed:
    """How samples reach the network: per-head lookup tables, augmentation (and the
    left-right label swap, and synthetic lesions), 2-D or 3-D input, loader workers,
    augmentation on the GPU."""

    luts: dict[str, Any]  # head -> torch lookup FLARE id -> head class, on the device
    aug: AugmentConfig | None
    swap: Swap | None
    lesions: S.SyntheticLesions | None
    dims: int
    loader_workers: int
    on_device: bool
    channels_last: bool = False


def make_feed(stage: S.Stage, module, run: TrainRun, ctx: Context) -> Feed:
    import torch

    aug, swap = augment_config(stage)
    on_device = ctx.device.type == "cuda"  # augment on the GPU; workers only load arrays
    return Feed({h: torch.as_tensor(head_lut(c), device=ctx.device).long()
                 for h, c in stage.network.heads.items()}, aug, swap,
                stage.augmentation.lesions if stage.augmentation else None,
                getattr(module, "dims", 3),
                loader_workers(run.workers, on_device), on_device,
                channels_last(module, ctx.device))


def loader_workers(workers: int | None, on_device: bool) -> int:
    """Processes that make training samples. On the CPU none: the training process makes
    them between steps, since a worker process takes a core from the network's threads
    (2 cores, the demo's stages: tumor 6.8 s an epoch in-process against 10.9 s with one
    worker, organs 7.5 against 8.9 s, the same batches). With a GPU ``workers`` (default
    4, at most the usable CPUs) load arrays while it trains."""
    if not on_device:
        return 0
    return workers if workers is not None else min(4, usable_cpus())


#: Cases whose opened cache entries a dataset keeps: a 2-D patch stage draws 16 samples a step
#: from a few dozen cases, and opening the entry (its zip directory and array headers) for
#: each took 3 ms of the demo tumor stage's 0.19 s step; the mapped arrays cost address space,
#: not memory, and the small ones at most 64 KB each.
OPEN_CASES = 256


class Samples:
    """torch Dataset over (case index, sample seed) pairs of the cached arrays."""

    def __init__(self, paths: list[Path], stage: S.Stage, feed: Feed, prepare: bool):
        self.paths, self.stage, self.feed, self.prepare = paths, stage, feed, prepare
        self._open: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Case ``index``'s cached arrays, read-only (kept open for the next sample)."""
        arrays = self._open.get(index)
        if arrays is None:
            arrays = load_cached(self.paths[index])
            for a in arrays.values():
                a.flags.writeable = False  # shared by every later sample of the case
            if len(self._open) >= OPEN_CASES:
                self._open.pop(next(iter(self._open)))
            self._open[index] = arrays
        return arrays

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        arrays = self.arrays(index)
        if not self.prepare:
            return arrays, seed
        return D.make_sample(arrays, seed, self.stage.geometry, self.feed.aug, "cpu",
                             swap_lr=self.feed.swap, lesions=self.feed.lesions)


def collate(items):
    return items
