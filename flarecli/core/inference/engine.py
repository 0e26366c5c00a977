"""The inference engine behind ``flare infer`` and ``flare pseudolabel`` (one pipeline).

Per scan (any orientation, spacing or slice count), after bringing the array to the
canonical orientation with a transpose and flips (core.orient; undone at the end):

1. normalise with the coarse bundle's intensity parameters; resample the whole volume to the
   coarse size; abdomen mask = argmax; keep its main components (each at least a tenth of the
   largest); their box, mapped back to the scan's voxels, plus the organ bundle's margin in
   mm = the ROI (whole scan if empty);
2. crop the ROI from the full-resolution scan, normalise with each fine bundle's parameters,
   resample to the fine size, run the organ model (and the tumor model), argmax at network
   resolution (optionally averaging softmax over mirror flips first), then nearest-neighbour
   resample of the LABEL map -- never of the logits -- back to the ROI's size;
3. overlay tumor on organs, map network classes to FLARE ids, paste into a zero volume of the
   scan's size, optionally clean up connected components.

Resampling runs on the CPU and only network-size tensors go to the GPU, so device memory does
not grow with the slice count (measured: ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import ModelError
from flarecli.core.io.nifti import Geometry
from flarecli.core.preprocessing.stages import (
    Box,
    Intensity,
    StageSpec,
    box_of,
    crop,
    expand_box,
    margin_voxels,
    resample,
)

#: Coarse-mask components at least this share of the largest one's size make the ROI.
ABDOMEN_FRACTION = 0.1


@dataclass
class LoadedStage:
    model: Any
    meta: dict[str, Any]
    intensity: Intensity
    spec: StageSpec
    lut: np.ndarray  # network class -> FLARE id (uint8)
    flips: list[tuple[int, ...]]  # its mirror TTA views (tta_flips); [()] = none to add


def load_stage(folder: Path, device, which: str | None = None) -> LoadedStage:
    from flarecli.core.io.bundle import load_bundle

    model, meta = load_bundle(folder, which, device=str(device))
    pre = meta.get("preprocessing", {})
    try:
        intensity = Intensity.from_json(pre["intensity"])
        spec = StageSpec.from_json(pre["stage"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder}/model.json: incomplete preprocessing record ({e})") from e
    lut = np.zeros(max(256, meta["num_classes"]), np.uint8)
    for k, v in meta["label_map"].items():
        lut[int(k)] = int(v)
    return LoadedStage(model, meta, intensity, spec, lut,
                       tta_flips(meta, f"{folder}/model.json"))


@dataclass
class Prediction:
    label: np.ndarray  # uint8 FLARE ids, the scan's shape
    roi: Box  # in canonical orientation (core.orient)
    seconds: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None  # mean max-probability inside the predicted foreground
    agreement: float | None = None  # mean agreement of the TTA views with the final labels


def tta_flips(meta: dict[str, Any], source: str = "model.json") -> list[tuple[int, ...]]:
    """Mirror TTA views of a bundle: every combination of the spatial axes it was trained to
    be mirror-invariant on (``mirror_axes`` in model.json, 0 = z ... 2 = x), as flip dims of
    the (B, C, D, H, W) input; the first view is the scan itself.

    A network trained without mirroring has learned where up and front are: a flipped view
    is an anatomy it has never seen, and averaging it in destroys the prediction (measured on
    the synthetic demo: teacher organ DSC 0.68 alone, 0.36 averaged with S-I and A-P flips).
    Such a bundle has one view. Left-right is never mirrored in training (it would swap the
    left/right organ pairs), so it never appears here either. Bundles written before the
    field existed flipped S-I and A-P when trained with augmentation.
    """
    from flarecli.core.preprocessing.orientation import LEFT_RIGHT_AXIS

    axes = meta.get("mirror_axes")
    if axes is None:
        axes = [0, 1] if meta.get("training", {}).get("augment") else []
    allowed = {a for a in range(3) if a != LEFT_RIGHT_AXIS}
    if not isinstance(axes, list) or not all(a in allowed for a in axes) or len(
            set(axes)) != len(axes):
        raise ModelError(f"{source}: mirror_axes {axes!r} is not a list of distinct axes "
                         f"from {sorted(allowed)}")
    dims = sorted(a + 2 for a in axes)
    return [tuple(c) for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


class Engine:
    """Loaded bundles of a model folder (``coarse/``, ``organs/``, optional ``tumor/``)."""

    def __init__(self, model_dir: Path, device, with_tumor: bool = True,
                 which: str | None = None) -> None:
        model_dir = Path(model_dir)
        for required in ("coarse", "organs"):
            if not (model_dir / required / "model.json").is_file():
                raise ModelError(f"{model_dir}: no {required}/ model bundle",
                                 hint="train it with flare train --stage "
                                 f"{'coarse' if required == 'coarse' else 'fine'}")
        self.device = device
        self.coarse = load_stage(model_dir / "coarse", device, which)
        self.organs = load_stage(model_dir / "organs", device, which)
        self.tumor = None
        if with_tumor and (model_dir / "tumor" / "model.json").is_file():
            self.tumor = load_stage(model_dir / "tumor", device, which)
        for name, stage, target in (("coarse", self.coarse, "abdomen"),
                                    ("organs", self.organs, "organs"),
                                    ("tumor", self.tumor, "tumor")):
            if stage is not None and stage.meta.get("target") != target:
                raise ModelError(f"{model_dir}/{name}: bundle target is "
                                 f"'{stage.meta.get('target')}', expected '{target}'")

    def checksums(self) -> dict[str, str]:
        out = {}
        for name in ("coarse", "organs", "tumor"):
            stage = getattr(self, name)
            if stage is not None:
                which = stage.meta.get("default_weights", "final")
                out[name] = stage.meta["weights"][which]["sha256"]
        return out

    # -- network calls -------------------------------------------------------------------

    def _probabilities(self, stage: LoadedStage, volume, tta: bool):
        """Softmax (C, D, H, W) on the device, averaged over mirror flips when ``tta``."""
        import torch

        from flarecli.core.runtime import autocast

        x = volume[None, None].to(self.device, non_blocking=True)
        flips = stage.flips if tta else [()]
        tta = len(flips) > 1
        total = None
        views = []
        with torch.inference_mode(), autocast(self.device):
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                p = torch.softmax(stage.model(xi).float(), dim=1)
                if dims:
                    p = torch.flip(p, dims)
                total = p if total is None else total + p
                if tta:
                    views.append(p.argmax(1)[0].to(torch.uint8).cpu())
        probs = (total / len(flips))[0]
        return probs, views

    def _network_labels(self, stage: LoadedStage, image_roi: np.ndarray, tta: bool,
                        stats: dict[str, Any] | None = None):
        """Argmax of a stage at network resolution (uint8 tensor on the CPU)."""
        import torch

        from flarecli.core.runtime import autocast

        net_in = resample(stage.intensity.apply(image_roi), stage.spec.size_zyx, "linear")
        if not tta and stats is None:  # argmax of the logits: no softmax buffers on the GPU
            with torch.inference_mode(), autocast(self.device):
                logits = stage.model(net_in[None, None].to(self.device, non_blocking=True))
                return logits[0].argmax(0).to(torch.uint8).cpu()
        probs, views = self._probabilities(stage, net_in, tta)
        labels = probs.argmax(0).to(torch.uint8)
        if stats is not None:
            fg = labels > 0
            top = probs.max(0).values
            stats["confidence"] = float(top[fg].mean()) if bool(fg.any()) else 0.0
            if views:
                agree = []
                for v in views:
                    v = v.to(labels.device)
                    union = (v > 0) | fg
                    agree.append(float((v[union] == labels[union]).float().mean())
                                 if bool(union.any()) else 1.0)
                stats["agreement"] = float(np.mean(agree))
        return labels.cpu()

    def _segment(self, stage: LoadedStage, image_roi: np.ndarray, tta: bool,
                 stats: dict[str, Any] | None = None) -> np.ndarray:
        """A stage's labels (network classes, uint8) back at the region's size: nearest
        resampling of the argmax label map, never of the logits."""
        labels = self._network_labels(stage, image_roi, tta, stats)
        return resample(labels, image_roi.shape, "nearest").numpy()

    # -- the pipeline ----------------------------------------------------------------------

    def roi(self, image: np.ndarray, spacing_zyx) -> Box:
        """Abdomen box of a scan (its voxels), from the coarse model, plus the fine margin.

        Components are taken at the coarse network's resolution and the box scaled to the
        scan (outward), which avoids labelling a full-size mask. The box holds every component
        of at least ABDOMEN_FRACTION of the largest: a coarse mask that came out in pieces
        (liver side and spleen side) must not lose half the abdomen, which costs far more
        than a somewhat larger box; specks are still dropped.
        """
        from flarecli.core.postprocessing.components import main_components

        mask = self._network_labels(self.coarse, image, tta=False).numpy() > 0
        abdomen = main_components(mask, ABDOMEN_FRACTION)
        if abdomen is None:
            return tuple((0, s) for s in image.shape)  # type: ignore[return-value]
        box = box_of(abdomen)
        scale = [s / m for s, m in zip(image.shape, mask.shape, strict=True)]
        box = tuple((int(np.floor(a * f)), int(np.ceil(b * f)))
                    for (a, b), f in zip(box, scale, strict=True))  # type: ignore[assignment]
        return expand_box(box, margin_voxels(self.organs.spec.margin_mm, spacing_zyx),
                          image.shape)

    def predict(self, image: np.ndarray, geometry: Geometry, tta: bool = False,
                with_tumor: bool = True) -> Prediction:
        from flarecli.core.preprocessing.orientation import to_canonical

        t0 = time.perf_counter()
        reorient = to_canonical(geometry.direction)
        image = reorient.apply(image)
        box = self.roi(image, reorient.spacing(geometry.spacing_zyx))
        t1 = time.perf_counter()
        region = crop(image, box)
        stats: dict[str, Any] = {}
        organs = self.organs.lut[self._segment(self.organs, region, tta, stats)]
        if with_tumor and self.tumor is not None:
            tumor = self._segment(self.tumor, region, tta)
            organs[tumor > 0] = self.tumor.lut[1]
        out = np.zeros(image.shape, np.uint8)
        out[tuple(slice(a, b) for a, b in box)] = organs
        out = reorient.invert(out)
        t2 = time.perf_counter()
        return Prediction(out, box, {"coarse": t1 - t0, "fine": t2 - t1},
                          stats.get("confidence"), stats.get("agreement"))


class GpuMemorySampler:
    """Samples device memory in use every ``interval`` s (the FLARE efficiency measure:
    whole-device used memory, as nvidia-smi reports it) and integrates it over time."""

    def __init__(self, device, interval: float = 0.1) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _used_mb(self) -> float:
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        return (total - free) / 2**20

    def __enter__(self) -> GpuMemorySampler:
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._used_mb())
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def area_mb_s(self) -> float | None:
        return sum(self.samples) * self.interval if self._thread is not None else None

    @property
    def max_mb(self) -> float | None:
        return max(self.samples) if self.samples else None
