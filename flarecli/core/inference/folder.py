"""Folder-level driver of the inference engine, shared by ``infer`` and ``pseudolabel``.

Reads the next scan in a background thread and writes finished label maps in another while
the current scan is computed; skips finished outputs unless ``overwrite``; a scan that fails
(unreadable, not 3-D, NaN) is reported in its result and the others go on.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import FlareError, InputError
from flarecli.core.inference.engine import Engine, GpuMemorySampler
from flarecli.core.io.cases import Case, check_output_dir, discover_cases
from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.labels import ORGANS
from flarecli.core.postprocessing.components import postprocess


@dataclass
class ScanResult:
    case: str
    image: str
    output: str
    skipped: bool = False
    error: str | None = None
    rejected: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    agreement: float | None = None
    volumes_ml: dict[int, float] = field(default_factory=dict)
    gpu_peak_mb: float | None = None
    gpu_max_used_mb: float | None = None
    gpu_area_mb_s: float | None = None

    @property
    def score(self) -> float | None:
        """Pseudo-label quality: confidence x TTA agreement (agreement 1 without TTA)."""
        if self.confidence is None:
            return None
        return self.confidence * (self.agreement if self.agreement is not None else 1.0)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["score"] = self.score
        d["volumes_ml"] = {str(k): v for k, v in self.volumes_ml.items()}
        return d


def input_cases(input_dir: Path, output_dir: Path) -> tuple[list[Case], list[tuple[Path, str]]]:
    found = discover_cases(input_dir)
    check_output_dir(output_dir, input_dir)
    cases = [c for c in found.cases if c.image is not None]
    if not cases and not found.stray:
        raise InputError(f"{input_dir}: no NIfTI images found")
    return cases, found.stray


def run_folder(engine: Engine, cases: list[Case], output_dir: Path, *, tta: bool = False,
               with_tumor: bool = True, clean: bool = True, overwrite: bool = False,
               min_score: float | None = None, connectivity: int = 26,
               min_tumor_mm3: float = 100.0) -> Iterator[ScanResult]:
    """Predict every case into ``output_dir/<case>.nii.gz``; yields one result per case."""
    import torch

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for c in cases:
        target = output_dir / f"{c.id}.nii.gz"
        if target.exists() and not overwrite:
            yield ScanResult(c.id, str(c.image), str(target), skipped=True)
        else:
            todo.append((c, target))

    def read(case: Case):
        t0 = time.perf_counter()
        try:
            image, geometry = read_volume(case.image)
            if min(image.shape) < 2:
                raise InputError(f"{case.image.name}: image has a single slice/row ({image.shape}"
                                 "), expected a 3-D scan")
            return image, geometry, time.perf_counter() - t0, None
        except FlareError as e:
            return None, None, time.perf_counter() - t0, str(e)

    def write(target: Path, label: np.ndarray, geometry) -> float:
        t0 = time.perf_counter()
        write_volume(target, label, geometry)
        return time.perf_counter() - t0

    def finish(pending: tuple[Future, ScanResult]) -> ScanResult:
        future, result = pending
        try:
            result.seconds["write"] = future.result()
        except FlareError as e:
            result.error = str(e)
        result.seconds["total"] = sum(result.seconds.get(k, 0.0)
                                      for k in ("read", "compute", "write"))
        return result

    # the next scan is read and the previous one written while the current one is computed
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        pending: tuple[Future, ScanResult] | None = None
        next_read = reader.submit(read, todo[0][0]) if todo else None
        for i, (case, target) in enumerate(todo):
            image, geometry, t_read, error = next_read.result()  # type: ignore[union-attr]
            next_read = reader.submit(read, todo[i + 1][0]) if i + 1 < len(todo) else None
            result = ScanResult(case.id, str(case.image), str(target))
            result.seconds["read"] = t_read
            if error:
                result.error = error
                yield result
                continue
            t0 = time.perf_counter()
            if engine.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(engine.device)
            with GpuMemorySampler(engine.device) as sampler:
                pred = engine.predict(image, geometry, tta=tta, with_tumor=with_tumor)
                label = pred.label
                if clean:
                    label, _ = postprocess(label, geometry.voxel_volume_mm3, connectivity,
                                           min_tumor_mm3)
                if engine.device.type == "cuda":
                    torch.cuda.synchronize(engine.device)
            del image
            result.seconds.update({k: round(v, 4) for k, v in pred.seconds.items()})
            result.seconds["compute"] = time.perf_counter() - t0
            result.confidence, result.agreement = pred.confidence, pred.agreement
            counts = np.bincount(label.ravel(), minlength=15)
            result.volumes_ml = {c: round(float(counts[c]) * geometry.voxel_volume_mm3 / 1000, 3)
                                 for c in ORGANS}
            if engine.device.type == "cuda":
                result.gpu_peak_mb = torch.cuda.max_memory_allocated(engine.device) / 2**20
                result.gpu_max_used_mb = sampler.max_mb
                result.gpu_area_mb_s = sampler.area_mb_s
            if min_score is not None and (result.score or 0.0) < min_score:
                result.rejected = True
                yield result
                continue
            if pending is not None:
                yield finish(pending)
            pending = (writer.submit(write, target, label, geometry), result)
        if pending is not None:
            yield finish(pending)


def profile_summary(results: list[ScanResult]) -> dict[str, Any]:
    """Per-scan profile plus means (the ``--profile`` JSON)."""
    done = [r for r in results if not r.skipped and not r.error and not r.rejected]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "scans": [r.to_json() for r in results],
        "summary": {
            "scans": len(done),
            "mean_seconds": {k: mean(r.seconds.get(k) for r in done)
                             for k in ("read", "compute", "write", "total")},
            "max_gpu_peak_mb": max((r.gpu_peak_mb for r in done if r.gpu_peak_mb), default=None),
            "mean_gpu_area_mb_s": mean(r.gpu_area_mb_s for r in done),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }
