"""Torch networks, resolved by name through an explicit registry.

:mod:`flarecli.models.registry` names the networks, their arguments and the presets without
importing torch (a recipe is checked, and a cached OpenVINO model run, without it);
:mod:`flarecli.models.build` builds them (``build_model(arch, **kwargs)``). ``PRESETS`` are
named argument sets (the paper's student, a larger teacher, small nets for CPU demos and
tests), which ``flare train --model`` puts into a recipe stage. A new system needs code here
only when it needs a new kind of network: everything else is recipe data.

The output contract: a network returns logits ``(B, C, *spatial)``, a deep-supervision list
of them (training), or a dict head name -> either; :func:`as_heads` gives every kind as a
dict.
"""

from __future__ import annotations

from typing import Any


def as_heads(outputs: Any, heads: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A network's output as a dict head name -> logits (or deep-supervision list); a
    single-head network's bare output belongs to the first (only) head."""
    if isinstance(outputs, dict):
        return outputs
    return {heads[0]: outputs}
