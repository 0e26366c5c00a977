"""OpenVINO on the CPU: convert a stage's torch network once, cache the compiled model.

Measured on a 2-core AVX-512/AMX Xeon (docs/cpu-inference.md): the paper student at 192^3
runs about 4x faster than torch eager, in bf16 -- OpenVINO's default precision on CPUs with
bf16 support. ``--precision f32`` keeps strict single precision.

The compiled model is cached outside the model folder (which is an input and may be read
only): ``--cache-dir``, else ``$XDG_CACHE_HOME/flare/openvino`` (``~/.cache/flare/...``). An
entry is keyed by everything the compiled code depends on -- the weights' SHA-256 and the
architecture, the input shape, the OpenVINO version, the precision asked for and the CPU's
instruction set -- and holds the exported blob and a record with the blob's SHA-256. Entries
are written to a temporary folder and renamed into place, so a reader sees a whole entry or
none; a blob that does not match its record, or does not import, is rebuilt rather than
trusted. The weights' checksum is verified (when the bundle loads) before anything is
converted, so a tampered bundle is refused as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import FlareError, ModelError
from flarecli.core.inference.int8 import Int8Calibration, quantize
from flarecli.core.inference.sure import SURE, labels_kind, sure_labels, sure_of_kind

#: CPU flags that change which kernels OpenVINO compiles (x86; other machines have none).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")

_core: Any = None
_CONVERTING = threading.Lock()
_CORE = threading.Lock()


class NotInstalled(Exception):
    """The openvino package is missing (or does not import)."""


class CompileFailed(Exception):
    """The network did not convert or compile."""


def _openvino():
    try:
        import openvino
    except Exception as e:  # noqa: BLE001 -- a broken install is as good as none
        raise NotInstalled(f"openvino is not installed ({type(e).__name__}: {e})"[:200]) from e
    return openvino


def core():
    global _core
    with _CORE:
        if _core is None:
            _core = _openvino().Core()
    return _core


def isa() -> str:
    """The instruction-set flags of this CPU that matter to compiled kernels."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    import platform

    return " ".join([platform.machine()] + [f for f in _ISA_FLAGS if f in flags])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flare"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _type_name(t: Any) -> str:
    name = t.get_type_name() if hasattr(t, "get_type_name") else str(t)
    return {"f32": "f32", "bf16": "bf16", "f16": "fp16"}.get(name, name)


class OpenVinoBackend:
    """A stage's network compiled by OpenVINO for this CPU: as a graph returning each head's
    logits, or one ending in each head's argmax (uint8), which spares copying the float
    logits out and taking their argmax in torch (1.3-2.5 s per 14-class 192^3 pass on two
    cores). The graph the run needs is built first; the other only if it is asked for."""

    name = "openvino"

    def __init__(self, heads: tuple[str, ...],
                 build: Callable[[str], tuple[Any, Path | None, bool]], first: str,
                 int8: bool = False) -> None:
        from flarecli.core.runtime import Device

        self.heads, self._build, self._compiled = heads, build, {}
        self.device = Device("cpu")
        compiled = self._get(first)
        self.entry, self.cached = self._compiled[first][1:]
        self.precision = "int8" if int8 else _type_name(
            compiled.get_property("INFERENCE_PRECISION_HINT"))

    def _get(self, outputs: str):
        if outputs not in self._compiled:
            self._compiled[outputs] = self._build(outputs)
        return self._compiled[outputs][0]

    def __call__(self, batch) -> dict[str, Any]:
        return self._run("logits", batch)

    def labels(self, batch, sure: dict[str, float] | None = None) -> dict[str, Any]:
        return self._run(labels_kind(sure), batch)

    def _run(self, outputs: str, batch) -> dict[str, Any]:
        """NumPy arrays per head, for a NumPy batch (no torch is imported: a run whose
        stages are all cached never loads it)."""
        from flarecli.core.inference.arrays import to_numpy

        try:
            compiled = self._get(outputs)
        except CompileFailed as e:
            raise ModelError(f"OpenVINO cannot compile this network's {outputs} graph ({e})",
                             hint="use --backend torch") from None
        out = compiled(np.ascontiguousarray(to_numpy(batch), dtype=np.float32),
                       share_inputs=True)  # outputs are copies
        # A compiled model keeps its intermediate buffers (about 1 GB for the paper student at
        # 192^3) until told otherwise; StMt's two fine models would hold 2 GB between scans.
        # Measured: peak RSS 2.6 -> 1.7 GB for the two, no change in time.
        getattr(compiled, "release_memory", lambda: None)()
        names = [*self.heads, *(h + SURE for h in sorted(sure_of_kind(outputs)))]
        return {name: out[i] for i, name in enumerate(names)}

    @classmethod
    def build(cls, model, heads: tuple[str, ...], input_shape: tuple[int, ...],
              key: dict[str, Any], precision: str, cache_dir: Path | None,
              warn: Callable[[str], None] | None = None, outputs: str = "logits",
              calibration: Int8Calibration | None = None, where: str = "the network",
              progress: Callable[[str], None] | None = None) -> OpenVinoBackend:
        """From the cache when a sound entry is there, else converted (quantized to int8
        with ``calibration``'s inputs, when given: the run's ``--precision int8``), compiled
        and cached; ``model`` builds the torch network, called only then. Raises NotInstalled
        or CompileFailed. ``progress`` is told when a compilation starts and ends (``where``
        names the stage's folder): the first run on a CPU spends 30-50 s there."""
        ov = _openvino()
        from flarecli.core.runtime import usable_cpus

        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": usable_cpus(),
                                  "PERFORMANCE_HINT": "LATENCY"}
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

        def build(kind: str) -> tuple[Any, Path | None, bool]:
            ident = {**key, "input_shape": list(input_shape), "outputs": kind,
                     "openvino": ov.__version__, "precision": precision, "isa": isa(),
                     "trace": "smallest"}
            if calibration is not None:
                ident["calibration_sha256"] = calibration.digest
            entry = root / "openvino" / _sha256(json.dumps(ident, sort_keys=True).encode())[:32]
            compiled = _load_entry(entry, config, warn)
            if compiled is not None:
                return compiled, entry, True
            name = f"'{Path(where).name}'"
            if progress is not None:
                progress(f"compiling {name} for this CPU (once; cached in {root / 'openvino'})")
            t0 = time.perf_counter()
            compiled = _compile(model(), heads, input_shape, config, kind, calibration)
            if progress is not None:
                progress(f"compiled {name} in {time.perf_counter() - t0:.1f} s")
            stored = _store_entry(entry, compiled, ident, warn)
            return compiled, entry if stored else None, False

        return cls(heads, build, outputs, int8=calibration is not None)


def _load_entry(entry: Path, config: dict[str, Any], warn) -> Any:
    """The compiled model of a cache entry, or None (absent, or unsound: then removed)."""
    import io

    record, blob_path = entry / "entry.json", entry / "model.blob"
    if not record.is_file():
        return None
    try:
        expected = json.loads(record.read_text())["blob_sha256"]
        blob = blob_path.read_bytes()
        if _sha256(blob) != expected:
            raise ValueError("checksum mismatch")
        return core().import_model(io.BytesIO(blob), "CPU", config)
    except Exception as e:  # noqa: BLE001 -- any unsound entry is rebuilt, never trusted
        if warn is not None:
            warn(f"note: {entry}: cached OpenVINO model is unusable ({e}); rebuilding it"[:300])
        shutil.rmtree(entry, ignore_errors=True)
        return None


def convert(model, heads: tuple[str, ...], input_shape: tuple[int, ...],
            outputs: str = "logits"):
    """The torch network as an OpenVINO model returning its heads' logits in order, or (a
    :func:`~flarecli.core.inference.sure.labels_kind`) their argmax over the classes as
    uint8, followed by the sure labels it names (head order sorted)."""
    import warnings

    import torch

    from flarecli.models import as_heads

    ov = _openvino()

    class Heads(torch.nn.Module):  # a tuple of the heads' outputs, in the recipe's order
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            out = as_heads(self.net(x), heads)
            if outputs == "logits":
                return tuple(out[h] for h in heads)
            labels = {h: torch.argmax(out[h], 1).to(torch.uint8) for h in heads}
            sure = [sure_labels(out[h].float(), labels[h], p) for h, p in
                    sorted(sure_of_kind(outputs).items())]
            return (*(labels[h] for h in heads), *sure)

    example = torch.zeros(_trace_shape(model, input_shape))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return ov.convert_model(Heads(model.cpu().eval()).eval(), example_input=example,
                                input=[list(input_shape)])


def _trace_shape(model, input_shape: tuple[int, ...]) -> list[int]:
    """The example input the network is traced with: the run's shape (a varying batch as 1).
    A network that states the multiple its sizes must be of (``divisor()``) is traced at the
    smallest such size of at least 2 levels, which gives the same graph -- the shapes come
    from ``input`` -- far faster (bf16 on a CPU is slow in torch)."""
    shape = [1 if n < 0 else n for n in input_shape]
    divisor = getattr(model, "divisor", None)
    if divisor is None:
        return shape
    d = list(divisor())
    spatial = shape[2:]
    if len(d) != len(spatial) or any(n % k for n, k in zip(spatial, d, strict=True)):
        return shape
    return shape[:2] + [min(n, 2 * k) for n, k in zip(spatial, d, strict=True)]


def _compile(model, heads: tuple[str, ...], input_shape: tuple[int, ...],
             config: dict[str, Any], outputs: str = "logits",
             calibration: Int8Calibration | None = None) -> Any:
    try:
        with _CONVERTING:  # torch's tracing is not thread-safe (stages load in threads)
            converted = convert(model, heads, input_shape, outputs)
        if calibration is not None:
            converted = quantize(converted, calibration.inputs(input_shape))
        return core().compile_model(converted, "CPU", config)
    except FlareError:  # e.g. an unreadable calibration scan: the user's to fix
        raise
    except Exception as e:  # noqa: BLE001 -- OpenVINO raises plain RuntimeErrors and more
        raise CompileFailed((str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from e


def _store_entry(entry: Path, compiled, ident: dict[str, Any], warn) -> bool:
    """Write the entry atomically (a temporary folder renamed into place). False when the
    cache cannot be written: the run goes on with the model compiled in memory."""
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}"
    try:
        blob = compiled.export_model().getvalue()
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "model.blob").write_bytes(blob)
        (tmp / "entry.json").write_text(json.dumps({**ident, "blob_sha256": _sha256(blob)},
                                                   indent=2) + "\n")
        try:
            os.rename(tmp, entry)
        except OSError:  # another process stored it first (or a broken one is in the way)
            shutil.rmtree(entry, ignore_errors=True)
            os.rename(tmp, entry)
        return True
    except Exception as e:  # noqa: BLE001 -- a cache is an optimisation, never a failure
        shutil.rmtree(tmp, ignore_errors=True)
        if warn is not None:
            warn(f"note: cannot write the OpenVINO cache in {entry.parent} ({e}); the model "
                 "will be compiled again next time"[:300])
        return False
