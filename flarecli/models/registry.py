"""The networks flare can build, by name, with the arguments each takes -- readable without
importing torch, so that checking a recipe (``flare recipes show``, a model folder's
recipe.json before a cached OpenVINO run) never loads it. ``flarecli.models`` builds them.
"""

from __future__ import annotations

from typing import Any

#: name -> (module, class, the constructor's keyword arguments). A test holds each tuple
#: to the class's real signature, so the two cannot drift apart.
NETWORKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "resunet": ("flarecli.models.resunet", "ResUNet",
                ("in_channels", "num_classes", "base_channels", "n_down", "blocks_down",
                 "blocks_up", "max_channels", "strides", "deep_supervision", "dims", "block",
                 "heads", "split_levels", "kernels")),
}

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


def arguments(arch: str) -> tuple[str, ...]:
    """The keyword arguments network ``arch`` takes (KeyError when it is not registered)."""
    return NETWORKS[arch][2]


def network_class(arch: str) -> type:
    """The torch class of network ``arch`` (imports torch)."""
    import importlib

    module, name, _ = NETWORKS[arch]
    return getattr(importlib.import_module(module), name)
