"""The seam between the engine and a runtime that executes networks.

A backend takes a network-size float32 batch ``(B, 1, *spatial)`` (a torch CPU tensor) and
returns the logits of every head, ``{head: (B, C, *spatial)}``, as tensors on the backend's
device; the engine does the softmax, flips and argmax there. Adding a runtime (OpenVINO, ONNX
Runtime) means adding a class here, not touching the engine.
"""

from __future__ import annotations

from typing import Any, Protocol


class Backend(Protocol):
    """What the engine needs from a runtime."""

    name: str
    device: Any

    def __call__(self, batch) -> dict[str, Any]:
        """Logits per head for a ``(B, 1, *spatial)`` float32 batch."""
        ...


class TorchBackend:
    """The network in PyTorch, on the CPU or a GPU; autocast per the stage's precision
    (half precision on CUDA with 'auto')."""

    name = "torch"

    def __init__(self, model, device, heads: tuple[str, ...], precision: str = "auto") -> None:
        self.model, self.device, self.heads, self.precision = model, device, heads, precision

    def __call__(self, batch) -> dict[str, Any]:
        import torch

        from flarecli.core.runtime import autocast
        from flarecli.models import as_heads

        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(batch.to(self.device, non_blocking=True))
        return {h: v.float() for h, v in as_heads(out, self.heads).items()}
