"""The seam between the engine and a runtime that executes networks.

A backend takes a network-size float32 batch ``(B, 1, *spatial)`` (a NumPy array) and
returns either the logits of every head, ``{head: (B, C, *spatial)}``, as arrays of its own
kind (torch: tensors on its device, where the engine does the softmax, flips and TTA
averaging; OpenVINO: NumPy arrays, see ``arrays.py``), or only each
head's argmax, ``{head: (B, *spatial)}`` uint8 (``labels``): what a plain fixed-size
prediction needs, and much less to move -- a 14-class 192^3 head is 400 MB of float logits
and 7 MB of labels. Adding a runtime means adding a class here, not touching the engine.

Two runtimes: PyTorch (CPU or CUDA) and OpenVINO (CPU; ``openvino.py``). ``--backend auto``
takes OpenVINO on the CPU when it is installed and the network compiles, torch otherwise (with
one warning line per run); ``--backend openvino`` makes either failure
an error. ``--precision auto`` is each runtime's fast default (OpenVINO: bf16 on CPUs with
AVX-512 bf16 or AMX, else f32; torch: the stage's precision, full precision on the CPU);
``f32`` asks for strict single precision; ``int8`` (OpenVINO, with ``--calibration``) runs
networks quantized by NNCF on scans the user names (``int8.py``, ``calibration.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flarecli.core.errors import InputError, ModelError
from flarecli.core.inference.int8 import Int8Calibration, check_available
from flarecli.core.inference.sure import SURE, sure_labels

BACKENDS = ("auto", "torch", "openvino")
BACKEND_PRECISIONS = ("auto", "f32", "int8")


class Backend(Protocol):
    """What the engine needs from a runtime."""

    name: str
    device: Any
    precision: str  # what it actually computes in: 'f32', 'bf16', 'fp16'

    def __call__(self, batch) -> dict[str, Any]:
        """Logits per head for a ``(B, 1, *spatial)`` float32 batch."""
        ...

    def labels(self, batch, sure: dict[str, float] | None = None) -> dict[str, Any]:
        """Argmax per head (uint8, the first class on ties), same batch; for each head of
        ``sure`` also, under ``head + SURE``, the argmax where its probability reaches that
        value and 0 elsewhere."""
        ...


@dataclass(frozen=True)
class BackendChoice:
    """``--backend``, ``--precision``, ``--cache-dir`` and ``--calibration`` of a run."""

    name: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = None
    calibration: Path | None = None  # the folder of scans that calibrate int8

    def check(self, device) -> None:
        if self.name not in BACKENDS:
            raise InputError(f"--backend {self.name}: expected one of {', '.join(BACKENDS)}")
        if self.precision not in BACKEND_PRECISIONS:
            raise InputError(f"--precision {self.precision}: expected one of "
                             f"{', '.join(BACKEND_PRECISIONS)}")
        if self.name == "openvino" and device.type != "cpu":
            raise InputError(f"--backend openvino runs on the CPU, not on {device}",
                             hint="use --device cpu, or --backend torch (or auto) on CUDA")
        if self.precision == "int8":
            self._check_int8(device)
        elif self.calibration is not None:
            raise InputError("--calibration calibrates --precision int8 only",
                             hint="add --precision int8, or leave --calibration out")

    def runs_torch(self, device) -> bool:
        """Whether the networks run in torch whatever happens (not only as a fallback)."""
        return self.name == "torch" or (self.name == "auto" and device.type != "cpu")

    def _check_int8(self, device) -> None:
        if self.name == "torch" or device.type != "cpu":
            raise InputError("--precision int8 is OpenVINO's, on the CPU",
                             hint="use --device cpu with --backend auto or openvino")
        if self.calibration is None:
            raise InputError("--precision int8 needs --calibration IMAGES: a few training "
                             "scans to quantize each network with")
        from flarecli.core.inference import openvino as OV

        try:
            OV._openvino()
        except OV.NotInstalled as e:
            raise InputError(f"--precision int8: {e}", hint="pip install openvino") from None
        check_available()


class TorchBackend:
    """The network in PyTorch, on the CPU or a GPU; autocast per the stage's precision
    (half precision on CUDA with 'auto'), or none with ``--precision f32``."""

    name = "torch"

    def __init__(self, model, device, heads: tuple[str, ...], precision: str = "auto") -> None:
        import torch

        from flarecli.core.runtime import amp_dtype

        device = torch.device(str(device))
        self.model, self.device, self.heads, self.autocast = model, device, heads, precision
        dtype = amp_dtype(device, precision)
        self.precision = "f32" if dtype is None else str(dtype).removeprefix("torch.") \
            .replace("bfloat16", "bf16").replace("float16", "fp16")

    def __call__(self, batch) -> dict[str, Any]:
        import torch

        from flarecli.core.runtime import autocast
        from flarecli.models import as_heads

        x = torch.as_tensor(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray)
                            else batch)
        with torch.inference_mode(), autocast(self.device, self.autocast):
            out = self.model(x.to(self.device, non_blocking=True))
        return {h: v.float() for h, v in as_heads(out, self.heads).items()}

    def labels(self, batch, sure: dict[str, float] | None = None) -> dict[str, Any]:
        import torch

        from flarecli.core.inference.arrays import argmax_labels

        with torch.inference_mode():
            logits = self(batch)
            out = {h: argmax_labels(v) for h, v in logits.items()}
            for h, p in (sure or {}).items():
                out[h + SURE] = sure_labels(logits[h], out[h], p)
            return out


_SETTINGS = threading.Lock()
_settings_done = False


def torch_settings(device, choice: BackendChoice) -> None:
    """:func:`flarecli.core.runtime.setup_torch` for a run whose networks may run in torch:
    once per process (stages load in threads, and torch's thread pool must not be resized
    while another thread uses it), with the heap tuning only when torch was asked for."""
    from flarecli.core.runtime import setup_torch

    global _settings_done
    with _SETTINGS:
        if not _settings_done:
            setup_torch(device, tune_heap=choice.name == "torch")
            _settings_done = True


def make_backend(model, device, heads: tuple[str, ...], stage_precision: str,
                 input_shape: tuple[int, ...], key: dict[str, Any], choice: BackendChoice,
                 notes: Callable[[str], None] | None = None, where: str = "",
                 fallbacks: list[str] | None = None, outputs: str = "logits",
                 calibration: Int8Calibration | None = None,
                 progress: Callable[[str], None] | None = None) -> Backend:
    """The backend a stage runs on. ``model``: a function that builds the torch network
    (called only if the backend needs it). ``input_shape``: the network's input, batch first (-1 for
    a batch that varies); ``key``: what identifies the weights (their SHA-256 and
    architecture) for the compiled-model cache; ``outputs``: what the run will ask of it,
    ``"logits"``, or a :func:`~flarecli.core.inference.sure.labels_kind` (each head's
    argmax, and sure labels) -- OpenVINO compiles that graph first, another only if it is
    asked for. With
    ``auto``, why OpenVINO was not used is appended to ``fallbacks`` (the caller warns once
    for the whole model). ``calibration``: the run's calibration with ``--precision int8``.
    ``progress``: told when an OpenVINO compilation starts and ends (tens of seconds)."""
    torch_precision = "fp32" if choice.precision == "f32" else stage_precision

    def on_torch() -> TorchBackend:
        # torch's threads are set when torch runs at all (a cached OpenVINO run never imports
        # it): by the Engine before its stages load (torch_settings), or here, once, when
        # 'auto' falls back (never the heap tuning then: it never gives memory back, which
        # the OpenVINO stages beside it would pay for)
        torch_settings(device, choice)
        return TorchBackend(model(), device, heads, torch_precision)

    if choice.runs_torch(device):
        return on_torch()
    from flarecli.core.inference import openvino as OV

    try:
        return OV.OpenVinoBackend.build(model, heads, input_shape, key, choice.precision,
                                        choice.cache_dir, notes, outputs, calibration,
                                        where=where or "the network", progress=progress)
    except OV.NotInstalled as e:
        if choice.name == "openvino":
            raise InputError(f"--backend openvino: {e}",
                             hint="pip install openvino, or use --backend torch") from None
        reason = str(e)
    except OV.CompileFailed as e:
        if choice.name == "openvino":
            raise ModelError(f"{where}: OpenVINO cannot compile this network ({e})",
                             hint="use --backend torch") from None
        reason = f"could not compile {where} ({e})"
    if fallbacks is not None:
        fallbacks.append(reason)
    return on_torch()
