"""int8 calibration: the inputs each stage's network sees on the scans the user names.

``--precision int8 --calibration IMAGES``: a stage's calibration inputs are what it sees on
the calibration scans -- the model runs on them once at its default precision and each
network's input is kept (the fine stages see the region the coarse stage finds, as in
inference). :mod:`flarecli.core.inference.int8` quantizes with them.

This module stands above the engine: a :class:`Calibration` builds an engine of its own at the
default precision to capture the inputs, and is handed to the int8 engine, which knows it only
as an :class:`~flarecli.core.inference.backends.Int8Calibration` (a digest and the inputs per
network shape). The capture runs on first need: when every stage's quantized model is in the
compiled-model cache (keyed by the digest), the calibration scans are never run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flarecli.core.errors import FlareError, InputError
from flarecli.core.inference.backends import Backend, BackendChoice
from flarecli.core.inference.engine import Engine
from flarecli.core.inference.int8 import scans_digest
from flarecli.core.io.cases import discover_scans, read_scan, require_dir


class Calibration:
    """The calibration scans of a run; their network inputs are computed on first need, by
    the model of ``model_dir`` run with the run's graph options (``with_tumor``, ``which``,
    ``graph``) and its compiled-model cache."""

    def __init__(self, folder: Path, model_dir: Path, cache_dir: Path | None, *,
                 with_tumor: bool = True, which: str | None = None,
                 graph: str | None = None) -> None:
        require_dir(folder, "--calibration")
        cases = [c for c in discover_scans(folder).cases if not c.problems]
        if not cases:
            raise InputError(f"{folder}: no usable scans for --calibration",
                             hint="name a folder of a few training images (8 is plenty)")
        self.cases = cases
        self.digest = scans_digest(c.image for c in cases)
        self._inputs: dict[tuple[int, ...], list[np.ndarray]] | None = None
        self._lock = threading.Lock()
        self._model_dir, self._cache_dir = Path(model_dir), cache_dir
        self._graph_options = {"with_tumor": with_tumor, "which": which, "graph": graph}

    def inputs(self, input_shape: tuple[int, ...]) -> list[np.ndarray]:
        """The calibration inputs of the stage whose network takes ``input_shape`` (matched
        on channels and size: a 2-D network's batch varies)."""
        with self._lock:
            if self._inputs is None:
                self._inputs = self._capture()
        found = self._inputs.get(tuple(input_shape[1:]))
        if not found:
            raise RuntimeError(f"no calibration input of shape {list(input_shape)}")
        return found

    def _capture(self) -> dict[tuple[int, ...], list[np.ndarray]]:
        """Run the model at its default precision on the calibration scans, keeping every
        network's inputs."""
        from flarecli.core.runtime import Device

        engine = Engine(self._model_dir, Device("cpu"),
                        backend=BackendChoice("auto", "auto", self._cache_dir),
                        **self._graph_options)
        captured: dict[tuple[int, ...], list[np.ndarray]] = {}

        def keep(batch) -> None:
            seen = captured.setdefault(tuple(batch.shape[1:]), [])
            x = np.array(batch, dtype=np.float32)  # a copy: the run reuses its buffers
            if not any(np.array_equal(x, s) for s in seen[-2:]):  # StMt's fine stages share
                seen.append(x)

        for ls in engine.stages.values():
            ls.backend = _Capturing(ls.backend, keep)
        for case in self.cases:
            try:
                image, geometry = read_scan(case.image, case.series_uid)
            except FlareError as e:  # nothing is quantized from a scan it cannot read
                raise InputError(f"--calibration: {e}",
                                 hint="leave the scan out of the calibration folder") from None
            engine.predict(image, geometry)
        return captured


class _Capturing:
    """A backend that hands each batch to ``keep`` before running it."""

    def __init__(self, inner: Backend, keep: Callable[[object], None]) -> None:
        self.inner, self.keep = inner, keep
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def __call__(self, batch):
        self.keep(batch)
        return self.inner(batch)

    def labels(self, batch, sure: dict[str, float] | None = None):
        self.keep(batch)
        return self.inner.labels(batch, sure)
