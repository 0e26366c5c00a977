"""Measuring a scan's cost: seconds per step, and resources sampled over time.

* ``step(name)`` adds the seconds of a block to the steps being recorded (``recording()``)
  in this thread, and does nothing when none are: the engine marks its steps (reorient,
  crop, normalise and resample, network, back to the scan's grid, post-processing, paste)
  at no cost to runs that do not profile.
* ``ResourceSampler`` samples, every ``interval`` s, the process's resident memory (a
  sampler, because ``ru_maxrss`` only ever grows: it cannot give one scan's peak), its CPU
  time (the area under the CPU-utilisation curve, FLARE22's CPU efficiency measure, in
  %-seconds: 100 %-s is one core busy for a second) and, on CUDA, the device memory in use
  (whole device, as nvidia-smi reports it; FLARE's GPU efficiency measure) with its area.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

_steps: ContextVar[dict[str, float] | None] = ContextVar("flare_steps", default=None)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the ``step`` seconds of the enclosed code (this thread) into a dict."""
    steps: dict[str, float] = {}
    token = _steps.set(steps)
    try:
        yield steps
    finally:
        _steps.reset(token)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    steps = _steps.get()
    if steps is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - t0


def rss_mb() -> float | None:
    """Resident memory of this process now (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class ResourceSampler:
    """Samples memory and CPU use while a scan is computed (see the module docstring)."""

    def __init__(self, device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.rss: list[float] = []
        self.gpu: list[float] = []
        self._cpu0 = self._wall0 = 0.0
        self.cpu_seconds = self.wall_seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _gpu_used_mb(self) -> float:
        import torch

        free, total = torch.cuda.mem_get_info(str(self.device))
        return (total - free) / 2**20

    def _sample(self) -> None:
        rss = rss_mb()
        if rss is not None:
            self.rss.append(rss)
        if self.device is not None and self.device.type == "cuda":
            self.gpu.append(self._gpu_used_mb())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ResourceSampler:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.cpu_seconds = time.process_time() - self._cpu0
        self.wall_seconds = time.perf_counter() - self._wall0

    @property
    def peak_rss_mb(self) -> float | None:
        return max(self.rss) if self.rss else None

    @property
    def cpu_area_pct_s(self) -> float:
        """Area under the CPU-utilisation curve (% x s): the process's CPU seconds x 100."""
        return 100.0 * self.cpu_seconds

    @property
    def cpu_utilisation_pct(self) -> float | None:
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds else None

    @property
    def gpu_area_mb_s(self) -> float | None:
        return sum(self.gpu) * self.interval if self.gpu else None

    @property
    def gpu_max_mb(self) -> float | None:
        return max(self.gpu) if self.gpu else None
