"""Torch networks, resolved by name through an explicit registry (imports only torch).

``build_model(arch, **kwargs)`` builds a registered architecture; ``PRESETS`` are named
argument sets (the paper's student, a larger teacher, small nets for CPU demos and tests),
which ``flare train --model`` puts into a recipe stage. A new system needs code here only when
it needs a new kind of network: everything else is recipe data.

The output contract: a network returns logits ``(B, C, *spatial)``, a deep-supervision list
of them (training), or a dict head name -> either; :func:`as_heads` gives every kind as a
dict.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from flarecli.models.resunet import ResUNet

MODELS: dict[str, type[nn.Module]] = {"resunet": ResUNet}

PRESETS: dict[str, dict[str, Any]] = {
    # StMt student: base 16 channels, 5 down/up samplings, one residual block per encoder
    # level, channels capped at 128: 6.53 M parameters (the paper's student: 6.66 M)
    "student": {"arch": "resunet", "base_channels": 16, "n_down": 5, "blocks_down": 1,
                "blocks_up": 0, "max_channels": 128},
    # teacher for pseudo-labels: wider and deeper (46.1 M parameters)
    "teacher": {"arch": "resunet", "base_channels": 32, "n_down": 5, "blocks_down": 2,
                "blocks_up": 1, "max_channels": 256},
    # CPU demos and tests
    "small": {"arch": "resunet", "base_channels": 8, "n_down": 4, "blocks_down": 1,
              "blocks_up": 1},
    "tiny": {"arch": "resunet", "base_channels": 4, "n_down": 2, "blocks_down": 1,
             "blocks_up": 1},
}

INITS: tuple[str, ...] = ("default", "he_normal")


def _unknown(kind: str, name: str, choices) -> ValueError:
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {sorted(choices)}"
    return ValueError(f"unknown {kind} '{name}'{hint}")


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise _unknown("model preset", name, PRESETS)
    return dict(PRESETS[name])


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture. Raises ValueError for unknown names or arguments."""
    if arch not in MODELS:
        raise _unknown("architecture", arch, MODELS)
    try:
        return MODELS[arch](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for '{arch}': {e}") from e


def initialise(model: nn.Module, scheme: str = "default") -> None:
    """'default' keeps PyTorch's initialisation; 'he_normal' draws every convolution's weights
    from He et al.'s normal distribution (fan-in, leaky ReLU 0.01) and zeroes their biases."""
    if scheme == "default":
        return
    if scheme != "he_normal":
        raise _unknown("initialisation", scheme, INITS)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, a=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def as_heads(outputs: Any, heads: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A network's output as a dict head name -> logits (or deep-supervision list); a
    single-head network's bare output belongs to the first (only) head."""
    if isinstance(outputs, dict):
        return outputs
    return {heads[0]: outputs}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
