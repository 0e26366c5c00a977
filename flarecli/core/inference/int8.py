"""int8 for OpenVINO, the parts that need no engine: whether NNCF is there, the quantization
itself, and the digest that names a set of calibration scans.

NNCF's post-training quantization (8-bit weights and activations, statistics from the
calibration inputs, fast bias correction) quantizes each stage's converted network with the
inputs that stage sees on the calibration scans (:mod:`flarecli.core.inference.calibration`
captures them). Measured (``bench/int8_gain.py``, 2-core AVX-512/AMX Xeon): 1.61x (128^3) and
1.66x (192^3) over bf16 on the paper student; organ DSC on the demo's test split -0.0002 (demo
student) and +0.0002 (paper student architecture) with 8 calibration scans.

The quantized, compiled model is cached like any other (``openvino.py``); its key adds the
calibration's digest -- the scans' names and the SHA-256 of their contents -- so other scans
make another entry and a cached int8 model never needs the calibration run again.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flarecli.core.errors import InputError


class Int8Calibration(Protocol):
    """What quantizing a run's networks needs: the digest naming its calibration scans (part
    of the compiled-model cache key) and each network's inputs on them, by input shape
    (:class:`flarecli.core.inference.calibration.Calibration` is the one there is)."""

    digest: str

    def inputs(self, input_shape: tuple[int, ...]) -> list[np.ndarray]:
        """The inputs of the network that takes ``input_shape`` (batch first)."""
        ...


def check_available() -> None:
    """InputError (exit code 3) when NNCF, which does the quantization, is not installed.
    Found, not imported: importing NNCF takes 1.2 s (torch's half of it among them), which a
    run whose quantized models are all in the compiled-model cache never needs."""
    import importlib.util

    try:
        found = sys.modules.get("nncf", False) is not None and \
            importlib.util.find_spec("nncf") is not None
    except (ImportError, ValueError) as e:  # a broken install is as good as none
        raise _missing(e) from None
    if not found:
        raise _missing(ModuleNotFoundError("No module named 'nncf'"))


def _missing(e: BaseException) -> InputError:
    return InputError(f"--precision int8 needs NNCF ({type(e).__name__}: {e})"[:200],
                      hint="pip install 'flarecli[int8]' (or pip install nncf)")


def scans_digest(images: Iterable[Path]) -> str:
    """SHA-256 over calibration scans (NIfTI files, or DICOM series folders): each file's name
    and contents, in order."""
    h = hashlib.sha256()
    for image in images:
        paths = sorted(image.iterdir()) if image.is_dir() else [image]
        for path in paths:
            h.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


_QUIET = threading.Lock()


def quantize(converted: Any, samples: list[Any]) -> Any:
    """NNCF post-training int8 quantization of an OpenVINO model, silently: NNCF draws its
    progress on standard output, which is redirected meanwhile -- one quantization at a
    time, since stages load in threads and two overlapping redirections restore each other's
    streams wrongly (seen: bars on stdout, and stdout left pointing at a buffer)."""
    import contextlib
    import io
    import logging

    try:
        import nncf
    except Exception as e:  # noqa: BLE001 -- found by check_available, yet broken
        raise _missing(e) from None
    nncf.set_log_level(logging.ERROR)
    with _QUIET, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(converted, nncf.Dataset(samples), subset_size=len(samples))
