"""Model bundles: a trained network as JSON + a state_dict, loaded without unpickling objects.

A bundle folder holds ``model.json`` (architecture and arguments, stage, target, label map,
preprocessing, input size, fingerprint, training config, versions, and the SHA-256 of each
weights file) and ``weights_best.pt`` / ``weights_final.pt`` (plain state_dicts). Loading
checks the checksum (a tampered or truncated file is refused) and uses
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from pathlib import Path
from typing import Any

from flarecli import __version__
from flarecli.core.errors import ModelError
from flarecli.core.io.nifti import atomic_path, read_json, write_text_atomic

BUNDLE_SCHEMA = 1
WEIGHTS = ("best", "final")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    import numpy
    import torch

    return {"flare": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_weights(folder: Path, which: str, state_dict: dict) -> str:
    """Write ``weights_<which>.pt`` atomically; return its SHA-256."""
    import torch

    path = Path(folder) / f"weights_{which}.pt"
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    return sha256(path)


def write_bundle(folder: Path, meta: dict[str, Any], checksums: dict[str, str]) -> None:
    data = {"schema": BUNDLE_SCHEMA, **meta, "versions": versions(),
            "weights": {k: {"file": f"weights_{k}.pt", "sha256": v}
                        for k, v in checksums.items()}}
    write_text_atomic(Path(folder) / "model.json", json.dumps(data, indent=2) + "\n")


def read_bundle(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no model.json (not a flare model bundle)")
    data = read_json(path, "model bundle", ModelError)
    if not (isinstance(data, dict) and data.get("schema") == BUNDLE_SCHEMA
            and "architecture" in data):
        raise ModelError(f"{path}: not a flare model bundle (schema {BUNDLE_SCHEMA})")
    return data


def load_bundle(folder: Path, which: str | None = None, device: str = "cpu"):
    """Build the network of a bundle and load its weights. Returns (model in eval mode, meta).

    ``which``: 'best' or 'final' (default: the bundle's ``default_weights``). Raises
    ModelError for a missing, tampered (checksum) or incompatible file.
    """
    import torch

    from flarecli.models import build_model

    meta = read_bundle(folder)
    which = which or meta.get("default_weights", "final")
    entry = meta["weights"].get(which)
    if entry is None:
        raise ModelError(f"{folder}: bundle has no '{which}' weights")
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise ModelError(f"{path}: weights file missing")
    if sha256(path) != entry["sha256"]:
        raise ModelError(f"{path}: checksum mismatch (modified or corrupt weights file)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        arch = meta["architecture"]
        model = build_model(arch["name"], **arch["args"])
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, EOFError,
            pickle.UnpicklingError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"{path}: cannot load weights ({reason})") from e
    return model.to(device).eval(), meta
