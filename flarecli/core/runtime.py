"""Process-level settings for torch work: device, threads, malloc tuning, mixed precision.

Measured on the 2-core CPU (../shared/PERFORMANCE.md): glibc's default malloc spends ~40 % of
3-D convolution time in page faults; disabling mmap for large blocks and never trimming the
heap roughly halves CPU forward time. bf16 autocast on that CPU is unusable, so autocast is
used on CUDA only (bf16 where supported, else fp16 with a gradient scaler).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_tuned = False


def tune_malloc() -> bool:
    """Apply the malloc settings once (glibc only; a no-op elsewhere). Returns success."""
    global _tuned
    if _tuned:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _tuned = bool(ok)
    return _tuned


def return_large_frees(threshold: int = 1 << 20) -> bool:
    """For NumPy and OpenVINO work (not torch's: see :func:`tune_malloc`): every block of at
    least ``threshold`` bytes gets a mapping of its own, given back to the system when freed.
    glibc's default raises that threshold up to 32 MB as large blocks are freed, so a scan's
    box-sized arrays (labels, masks: 20-70 MB each) land in the heap, whose freed middle is
    never returned; on the paper student's 512 x 512 x 300 scan the heap held about 200 MB
    more when the tumor network started than when the organ network did. glibc only (a no-op
    elsewhere, and where torch's setting is already in place); returns whether it applied."""
    if _tuned:
        return False
    try:
        return ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
    except (OSError, AttributeError):
        return False


def resolve_device(name: str = "auto"):
    """'auto' -> cuda when available else cpu; 'cuda', 'cuda:1', 'cpu' as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device {name}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine",
                         hint="use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: flare runs on cpu or cuda")
    return device


@dataclass(frozen=True)
class Device:
    """Where inference runs, named without importing torch: ``type`` ('cpu' or 'cuda') and
    ``str()`` as torch.device has them; torch takes ``str(device)``."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


#: Files that exist wherever an NVIDIA driver is loaded (Linux; /dev/dxg: WSL2).
_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def cuda_possible() -> bool:
    """Whether this machine could offer CUDA at all. Without an NVIDIA driver it cannot, and
    a CPU run need not import torch (about 2 s of a fresh process) to learn that; elsewhere
    than Linux torch is asked."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(p).exists() for p in _DRIVER_FILES)


def inference_device(name: str = "auto") -> Device:
    """:func:`resolve_device` for inference, as a :class:`Device`: 'cpu', and 'auto' on a
    machine without an NVIDIA driver, are answered without importing torch."""
    if name == "cpu" or (name == "auto" and not cuda_possible()):
        return Device("cpu")
    device = resolve_device(name)
    return Device(device.type, device.index)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: ``taskset``, container CPU sets), not
    the machine's count, so that parallel runs pinned to separate cores do not oversubscribe.
    A cgroup CPU quota (``docker --cpus``) is not an affinity and is not seen here."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def setup_torch(device, benchmark: bool = False, tune_heap: bool = True) -> None:
    """Threads, malloc tuning and cuDNN settings for a run on ``device``.

    ``benchmark`` turns on cuDNN autotuning: worth it for training (thousands of steps at one
    size), not for inference, where it adds seconds of start-up per process. ``tune_heap``
    applies the malloc settings, which speed up torch on the CPU but never give memory back:
    OpenVINO inference goes without them (measured on a 512x512x300 scan: peak RSS 13.5 ->
    4.3 GB in a fresh process, and faster).
    """
    import torch

    if tune_heap:
        tune_malloc()
    if device.type == "cpu":
        if torch.get_num_threads() != usable_cpus():
            torch.set_num_threads(usable_cpus())
    else:
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def join_process_group(backend: str) -> None:
    """Join the ``torchrun`` launch's process group, once per process, and leave it at exit.

    A gloo group still alive when the interpreter finalizes aborts the process ("terminate
    called without an active exception"): its C++ threads are destroyed unjoined. That failed
    one run in about twelve of a two-rank ``flare infer`` on the 2-core CPU, after every scan
    was written. Leaving at ``atexit``, while the interpreter is whole, ends every run cleanly;
    by then each rank has finished its last collective (training ends on a barrier, inference
    on the gather of the run record).
    """
    import atexit

    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group(backend)
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


#: Training and inference precisions a recipe can ask for.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def amp_dtype(device, precision: str = "auto"):
    """The autocast dtype for ``device`` (None = full precision). 'auto': bf16 (or fp16 with a
    gradient scaler) on CUDA, full precision on the CPU (bf16 autocast on CPUs without
    AVX-512 bf16 is far slower: ../shared/PERFORMANCE.md). 'fp16' is a GPU setting (seed 004
    trains in fp16 on CUDA): the CPU has no fast fp16 and runs it in full precision."""
    import torch

    if precision == "fp32" or (precision in ("auto", "fp16") and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, precision: str = "auto") -> Any:
    import torch

    dtype = amp_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
