"""Building the registered networks (imports torch): ``build_model(arch, **kwargs)``, the
initialisations, parameter counts. What exists, and with which arguments, is
:mod:`flarecli.models.registry`, readable without torch."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from flarecli.models.registry import INITS, NETWORKS, PRESETS, network_class

MODELS: dict[str, type[nn.Module]] = {name: network_class(name) for name in NETWORKS}


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
