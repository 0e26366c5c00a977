"""Measuring a scan's cost: device memory over time, FLARE's efficiency measure."""

from __future__ import annotations

import threading


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
