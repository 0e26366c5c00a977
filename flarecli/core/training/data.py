"""Training data: which cases train a stage/target, their kinds (FL / CPL / PL), the
kind-balanced batch sampler, and the per-sample pipeline (ROI jitter + augmentation).

Sources ``flare train`` accepts:

* a dataset folder (imagesTr/ + labelsTr/): every labelled case, its label taken as complete
  (kind FL). This is plain supervised training -- on partial labels it is the "naive"
  baseline of StMt's ablation.
* an audit manifest (``flare audit --json``): organs/abdomen train on the cases with all 13
  organs (FL); tumor on every tumor-annotated case.
* a corrected-label manifest (``flare correct``): each case carries ``kind`` (FL, CPL or PL)
  and the classes that came from annotation (``annotated``); organs/abdomen use every case,
  tumor the cases whose annotation includes the tumor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flarecli.core.errors import InputError
from flarecli.core.labels import TUMOR

TARGETS: tuple[str, ...] = ("abdomen", "organs", "tumor")


def target_lut(target: str) -> np.ndarray:
    """uint8 lookup FLARE id -> training class for a target.

    abdomen: any label -> 1; organs: 1..13 kept, tumor -> 0 (background); tumor: 14 -> 1.
    """
    lut = np.zeros(256, np.uint8)
    if target == "abdomen":
        lut[1:15] = 1
    elif target == "organs":
        lut[1:14] = np.arange(1, 14)
    elif target == "tumor":
        lut[TUMOR] = 1
    else:
        raise InputError(f"unknown target '{target}'")
    return lut


def num_classes(target: str) -> int:
    return 14 if target == "organs" else 2


@dataclass(frozen=True)
class TrainCase:
    id: str
    image: str
    label: str
    kind: str  # FL, CPL or PL


def _from_folder(folder: Path) -> list[TrainCase]:
    from flarecli.core.io.cases import discover_cases

    images = folder / "imagesTr"
    if not images.is_dir():
        raise InputError(f"{folder}: no imagesTr/ folder",
                         hint="give a dataset folder or a manifest (.json)")
    found = discover_cases(images, folder / "labelsTr")
    return [TrainCase(c.id, str(c.image), str(c.label), "FL") for c in found.cases
            if c.image is not None and c.label is not None and not c.problems]


def training_cases(source: Path, target: str) -> tuple[list[TrainCase], list[str]]:
    """The cases that train ``target`` from ``source``; returns (cases, notes for the user)."""
    source = Path(source)
    notes: list[str] = []
    if source.is_dir():
        cases = _from_folder(source)
        if target == "tumor":
            notes.append("plain labels: only cases whose label contains a tumor are used")
            cases = [c for c in cases if _has_tumor(c.label)]
        else:
            notes.append("plain labels are taken as complete (FL); for partial labels use an "
                         "audit or correct manifest")
    elif source.is_file():
        from flarecli.core.io.nifti import read_json

        data = read_json(source, "manifest")
        entries = data.get("cases") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise InputError(f"{source}: not a flare manifest (no 'cases' list)")
        cases = []
        skipped = 0
        for e in entries:
            if not e.get("image") or not e.get("label") or e.get("problems"):
                skipped += 1
                continue
            kind = e.get("kind")
            annotated = e.get("annotated")
            if kind is None:  # audit manifest
                annotated = list(e.get("organs", [])) + ([TUMOR] if e.get("tumor") else [])
                kind = "FL" if e.get("organ_category") == "full" else None
            if target == "tumor":
                use = TUMOR in (annotated or [])
                kind = "FL"
            else:
                use = kind in ("FL", "CPL", "PL")
            if use:
                cases.append(TrainCase(e["id"], e["image"], e["label"], kind))
            else:
                skipped += 1
        if skipped:
            notes.append(f"{skipped} manifest cases do not train target '{target}' "
                         "(not fully labelled / not annotated / problems)")
    else:
        raise InputError(f"{source}: no such dataset folder or manifest")
    if not cases:
        raise InputError(f"{source}: no cases to train target '{target}'",
                         hint="for partial labels run flare pseudolabel + correct first")
    return sorted(cases, key=lambda c: c.id), notes


def _has_tumor(label_path: str) -> bool:
    from flarecli.core.io.nifti import read_volume

    return bool((read_volume(Path(label_path))[0] == TUMOR).any())


def split_validation(cases: list[TrainCase], fraction: float, seed: int
                     ) -> tuple[list[TrainCase], list[TrainCase]]:
    """Deterministic hold-out of FL cases (at least one when fraction > 0 and >= 2 FL)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--val-fraction {fraction}: must be in [0, 1)")
    fl = [c for c in cases if c.kind == "FL"]
    n_val = int(round(len(fl) * fraction))
    if fraction > 0 and n_val == 0 and len(fl) >= 2:
        n_val = 1
    order = np.random.default_rng(seed).permutation(len(fl))
    val_ids = {fl[i].id for i in order[:n_val]}
    return [c for c in cases if c.id not in val_ids], [c for c in cases if c.id in val_ids]


class KindBalancedSampler:
    """Batches whose samples cycle over the kinds present (FL, CPL, PL): equal proportions.

    Sample j of step t in an epoch has kind ``kinds[(t * batch + j) % len(kinds)]`` and a case
    drawn uniformly from that kind. Everything is a function of (seed, rank, epoch), so a run
    resumed at an epoch boundary sees exactly the same samples, and every rank of a
    distributed run sees different ones.
    """

    def __init__(self, kinds: list[str], batch_size: int, steps: int, seed: int,
                 rank: int = 0) -> None:
        self.by_kind: dict[str, list[int]] = {}
        for i, k in enumerate(kinds):
            self.by_kind.setdefault(k, []).append(i)
        self.kinds = [k for k in ("FL", "CPL", "PL") if k in self.by_kind]
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


def make_sample(arrays: dict[str, np.ndarray], seed: int, size_zyx, jitter: float,
                lut: np.ndarray, augment_config, device, train: bool = True):
    """(image (1, D, H, W) float32, label (D, H, W) int64) for one cached case."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    image = torch.as_tensor(arrays["image"], device=device).float()
    label = torch.as_tensor(lut[arrays["label"]], device=device)
    box = sample_box(arrays["roi"], rng, jitter if train else 0.0)
    grid = box_grid(box, image.shape, size_zyx, device)
    img = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[0]
    lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[0, 0].long()
    if train and augment_config is not None:
        from flarecli.core.training import augment

        params = augment.sample_params(rng, augment_config, tuple(size_zyx))
        img, lab = augment.apply(img, lab, params)
    return img, lab

