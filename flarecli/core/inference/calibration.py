"""int8 for OpenVINO: each stage's network quantized with its own inputs on scans the user names.

``--precision int8 --calibration IMAGES``: NNCF's post-training quantization (8-bit weights
and activations, statistics from the calibration inputs, fast bias correction) of every stage
of the model. A stage's calibration inputs are what it sees on the calibration scans: the
model runs on them once at its default precision and each network's input is kept (the fine
stages see the region the coarse stage finds, as in inference).

Measured (``bench/int8_gain.py``, 2-core AVX-512/AMX Xeon): 1.61x (128^3) and 1.66x (192^3)
over bf16 on the paper student; organ DSC on the demo's test split -0.0002 (demo student) and
+0.0002 (paper student architecture) with 8 calibration scans.

The quantized, compiled model is cached like any other (``openvino.py``); its key adds the
calibration's digest -- the scans' names and the SHA-256 of their contents -- so other scans
make another entry and a cached int8 model never needs the calibration run again.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from flarecli.core.errors import FlareError, InputError


def check_available() -> None:
    """InputError (exit code 3) when NNCF, which does the quantization, is not installed."""
    try:
        import nncf  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- a broken install is as good as none
        raise InputError(f"--precision int8 needs NNCF ({type(e).__name__}: {e})"[:200],
                         hint="pip install 'flarecli[int8]' (or pip install nncf)") from None


class Calibration:
    """The calibration scans of a run; their network inputs are computed on first need, by
    the model of ``model_dir`` run with ``engine_args`` (the run's graph options) and the
    run's compiled-model cache."""

    def __init__(self, folder: Path, model_dir: Path, cache_dir: Path | None,
                 **engine_args: Any) -> None:
        from flarecli.core.io.cases import discover_scans, require_dir

        require_dir(folder, "--calibration")
        cases = [c for c in discover_scans(folder).cases if not c.problems]
        if not cases:
            raise InputError(f"{folder}: no usable scans for --calibration",
                             hint="name a folder of a few training images (8 is plenty)")
        self.cases = cases
        self.digest = self._digest()
        self._inputs: dict[tuple[int, ...], list[Any]] | None = None
        self._lock = threading.Lock()
        self._model = (Path(model_dir), cache_dir, engine_args)

    def _digest(self) -> str:
        h = hashlib.sha256()
        for case in self.cases:
            paths = sorted(case.image.iterdir()) if case.image.is_dir() else [case.image]
            for path in paths:
                h.update(path.name.encode() + b"\0")
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        return h.hexdigest()

    def inputs(self, input_shape: tuple[int, ...]) -> list[Any]:
        """The calibration inputs of the stage whose network takes ``input_shape`` (matched
        on channels and size: a 2-D network's batch varies)."""
        with self._lock:
            if self._inputs is None:
                self._inputs = self._capture()
        found = self._inputs.get(tuple(input_shape[1:]))
        if not found:
            raise RuntimeError(f"no calibration input of shape {list(input_shape)}")
        return found

    def _capture(self) -> dict[tuple[int, ...], list[Any]]:
        """Run the model at its default precision on the calibration scans, keeping every
        network's inputs."""
        import numpy as np
        import torch

        from flarecli.core.inference.backends import BackendChoice
        from flarecli.core.inference.engine import Engine
        from flarecli.core.io.cases import read_scan

        model_dir, cache_dir, engine_args = self._model
        engine = Engine(model_dir, torch.device("cpu"),
                        backend=BackendChoice("auto", "auto", cache_dir), **engine_args)
        captured: dict[tuple[int, ...], list[Any]] = {}

        def keep(batch) -> None:
            seen = captured.setdefault(tuple(batch.shape[1:]), [])
            x = batch.detach().cpu().numpy().copy()
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

    def __init__(self, inner: Any, keep: Any) -> None:
        self.inner, self.keep = inner, keep
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def __call__(self, batch):
        self.keep(batch)
        return self.inner(batch)

    def labels(self, batch):
        self.keep(batch)
        return self.inner.labels(batch)


_QUIET = threading.Lock()


def quantize(converted: Any, samples: list[Any]) -> Any:
    """NNCF post-training int8 quantization of an OpenVINO model, silently: NNCF draws its
    progress on standard output, which is redirected meanwhile -- one quantization at a
    time, since stages load in threads and two overlapping redirections restore each other's
    streams wrongly (seen: bars on stdout, and stdout left pointing at a buffer)."""
    import contextlib
    import io
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    with _QUIET, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(converted, nncf.Dataset(samples), subset_size=len(samples))
