"""Model bundles: one trained stage as JSON + a state_dict, loaded without unpickling objects.

A bundle folder holds ``model.json`` and ``weights_best.pt`` / ``weights_final.pt`` (plain
state_dicts). ``model.json`` (schema 2) records the recipe and stage that trained it, the
stage exactly as trained (network and heads, geometry, orientation, intensity scheme,
augmentation -- whose mirrors are its TTA views --, method, schedule), the architecture with
its arguments, the resolved intensity numbers, the training options, versions, and the
SHA-256 and size of each weights file, and ``record_sha256``: the SHA-256 of model.json itself
(:func:`record_checksum`), so an edit of its intensity numbers or stage is caught like an edit
of the weights. Loading refuses a field model.json does not define (a typo would otherwise be
silently ignored), checks both checksums (a tampered or truncated file is refused), uses
``torch.load(..., weights_only=True)`` and refuses weights holding NaN or inf.
Bundles written before ``record_sha256`` existed load without that check.

Bundles of schema 1 (written before recipes existed: ``target`` coarse/organs/tumor) still
load; :func:`bundle_stage` reads them as the matching ``stmt`` stage.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import re
import warnings
from pathlib import Path
from typing import Any

from flarecli import __version__
from flarecli.core.errors import ModelError
from flarecli.core.io.files import atomic_path, read_json, write_text_atomic

BUNDLE_SCHEMA = 2
WEIGHTS = ("best", "final")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: model.json's own checksum: SHA-256 of the rest of it as canonical JSON.
RECORD_SHA256 = "record_sha256"

#: The fields of model.json per schema; any other one is refused.
FIELDS: dict[int, frozenset[str]] = {
    1: frozenset({"schema", "architecture", "default_weights", "exported", "fingerprint",
                  "input_size_zyx", "label_map", "mirror_axes", "num_classes", "preprocessing",
                  "stage", "target", "training", "versions", "weights"}),
    2: frozenset({"schema", "recipe", "preset", "stage_name", "stage", "architecture",
                  "intensity", "fingerprint", "training", "default_weights", "exported",
                  "versions", "weights", RECORD_SHA256}),
}
ARCHITECTURE_FIELDS = frozenset({"name", "args"})
#: ``bytes``: the file's size, recorded since it existed; it bounds what a model zip may unpack.
WEIGHTS_FIELDS = frozenset({"file", "sha256", "bytes"})


def record_checksum(data: dict[str, Any]) -> str:
    """SHA-256 of a model.json's fields (``record_sha256`` left out) as canonical JSON: sorted
    keys, no spaces, ASCII -- independent of how the file is indented."""
    rest = {k: v for k, v in data.items() if k != RECORD_SHA256}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``record_sha256`` (re)computed."""
    return {**{k: v for k, v in data.items() if k != RECORD_SHA256},
            RECORD_SHA256: record_checksum(data)}


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


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` as bytes. Saved to a file, torch names its archive records
    after the file (flare's temporary names are unique) and stamps a random id; saved to
    memory, the same tensors give the same bytes -- so equal weights have equal checksums."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_weights(folder: Path, which: str, state_dict: dict) -> str:
    """Write ``weights_<which>.pt`` atomically; return its SHA-256."""
    path = Path(folder) / f"weights_{which}.pt"
    data = torch_bytes({k: v.detach().cpu() for k, v in state_dict.items()})
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_bundle(folder: Path, meta: dict[str, Any], checksums: dict[str, str]) -> None:
    """Write ``model.json`` for the weights files ``weights_<which>.pt`` already in
    ``folder`` (``checksums``: which -> their SHA-256), sealed with ``record_sha256``."""
    weights = {}
    for k, v in checksums.items():
        name = f"weights_{k}.pt"
        weights[k] = {"file": name, "sha256": v, "bytes": (Path(folder) / name).stat().st_size}
    data = {"schema": BUNDLE_SCHEMA, **meta, "versions": versions(), "weights": weights}
    write_text_atomic(Path(folder) / "model.json", json.dumps(sealed(data), indent=2) + "\n")


def _unknown(path: Path, fields, known, where: str = "") -> None:
    unknown = sorted(set(fields) - set(known))
    if unknown:
        from flarecli.core.errors import did_you_mean

        raise ModelError(f"{path}: unknown field '{where}{unknown[0]}'",
                         hint=did_you_mean(unknown[0], sorted(known))
                         or "model.json holds only the fields flare writes")


def read_bundle(folder: Path) -> dict[str, Any]:
    """``model.json`` of a bundle, its structure checked; raises ModelError naming the file."""
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no model.json (not a flare model bundle)")
    data = read_json(path, "model bundle", ModelError)
    if not isinstance(data, dict) or data.get("schema") not in (1, BUNDLE_SCHEMA):
        raise ModelError(f"{path}: not a flare model bundle (schema 1 or {BUNDLE_SCHEMA})")
    _unknown(path, data, FIELDS[data["schema"]])
    if RECORD_SHA256 in data and data[RECORD_SHA256] != record_checksum(data):
        raise ModelError(f"{path}: checksum mismatch (model.json was edited after it was "
                         "written: its fields no longer match its record_sha256)")
    arch = data.get("architecture")
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str)
            and isinstance(arch.get("args"), dict)):
        raise ModelError(f"{path}: 'architecture' must be an object with a name and args")
    _unknown(path, arch, ARCHITECTURE_FIELDS, "architecture.")
    weights = data.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise ModelError(f"{path}: 'weights' must be an object naming the weights files")
    for which, entry in weights.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str) and _SHA256.match(entry["sha256"])):
            raise ModelError(f"{path}: weights '{which}' needs a file name and a sha256")
        _unknown(path, entry, WEIGHTS_FIELDS, f"weights.{which}.")
        size = entry.get("bytes")
        if size is not None and not (type(size) is int and size > 0):
            raise ModelError(f"{path}: weights '{which}': 'bytes' must be a positive integer")
        if Path(entry["file"]).name != entry["file"]:
            raise ModelError(f"{path}: weights '{which}': the file must lie in the bundle "
                             f"folder, not '{entry['file']}'")
    default = data.get("default_weights", "final")
    if default not in weights:
        raise ModelError(f"{path}: default_weights '{default}' is not among its weights")
    return data


def weights_entry(folder: Path, meta: dict[str, Any], which: str | None) -> tuple[str, dict]:
    """(name, entry) of the weights a run uses: ``which`` or the bundle's default."""
    which = which or meta.get("default_weights", "final")
    entry = meta["weights"].get(which)
    if entry is None:
        raise ModelError(f"{folder}: bundle has no '{which}' weights",
                         hint=f"it has: {', '.join(meta['weights'])}")
    return which, entry


def load_bundle(folder: Path, which: str | None = None, device: str = "cpu"):
    """Build the network of a bundle and load its weights. Returns (model in eval mode, meta).

    ``which``: 'best' or 'final' (default: the bundle's ``default_weights``). Raises
    ModelError for a missing, tampered (checksum) or incompatible file.
    """
    meta = read_bundle(folder)
    return network_of(verified_weights(folder, meta, which), meta, device), meta


def verified_weights(folder: Path, meta: dict[str, Any], which: str | None = None) -> Path:
    """The weights file a run uses, after checking it against the bundle's SHA-256. Raises
    ModelError when it is missing or does not match (modified or corrupt)."""
    _, entry = weights_entry(folder, meta, which)
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise ModelError(f"{path}: weights file missing")
    if entry.get("bytes") is not None and path.stat().st_size != entry["bytes"]:
        raise ModelError(f"{path}: {path.stat().st_size} bytes, model.json says "
                         f"{entry['bytes']} (modified or truncated weights file)")
    if sha256(path) != entry["sha256"]:
        raise ModelError(f"{path}: checksum mismatch (modified or corrupt weights file)")
    return path


def network_of(path: Path, meta: dict[str, Any], device: str = "cpu"):
    """The bundle's network with the (verified) weights of ``path``, in eval mode."""
    import torch

    from flarecli.models.build import build_model

    try:
        with warnings.catch_warnings():  # torch warns of what it refuses below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False: never, for a model file
        if "global" in str(e).lower():  # 'Unsupported global: GLOBAL __main__.Evil'
            raise ModelError(f"{path}: holds Python objects beyond tensors, which flare never "
                             "unpickles (a model file is a state dict of tensors)") from e
        raise ModelError(f"{path}: cannot load weights (not a readable tensor file)") from e
    except (RuntimeError, ValueError, EOFError, OSError) as e:  # OSError: gone since verified
        raise ModelError(f"{path}: cannot load weights ({_first_line(e)})") from e
    try:
        arch = meta["architecture"]
        model = build_model(arch["name"], **arch["args"])
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"{path}: its weights do not fit the network its bundle describes "
                         f"({_first_line(e)})") from e
    check_finite(state, f"{path}: stage '{Path(path).parent.name}'")
    return model.to(device).eval()


def _first_line(error: Exception) -> str:
    """The first informative line of an error (torch's state-dict errors open with a
    header, 'Error(s) in loading state_dict for ResUNet:', and list the problems below)."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return (lines or [type(error).__name__])[0][:200]


def check_finite(state: dict[str, Any], where: str) -> None:
    """Refuse a state_dict with a NaN or inf in any floating-point tensor: such a network
    gives garbage labels without any error (its checksum only says it is the file that was
    written). Raises ModelError naming ``where`` and the first such tensor."""
    import torch

    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and (tensor.is_floating_point()
                                                 or tensor.is_complex()):
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ModelError(f"{where}: tensor '{name}' holds {bad} NaN/inf values of "
                                 f"{tensor.numel()}", hint="the training diverged, or the "
                                 "file was damaged before its checksum was recorded")


# ---------------------------------------------------------------------------------------------
# what a bundle says about its stage
# ---------------------------------------------------------------------------------------------

#: Schema-1 bundles: their target -> the stmt stage's heads and role.
_LEGACY = {
    "abdomen": ("roi", {"abdomen": [list(range(1, 15))]}),
    "organs": ("segment", {"organs": list(range(1, 14))}),
    "tumor": ("segment", {"tumor": [14]}),
}


def _legacy_stage(meta: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 bundle's stage in recipe form (the stmt stage it was trained as)."""
    target = meta.get("target")
    if target not in _LEGACY:
        raise ModelError(f"unknown target '{target}' in a schema-1 bundle")
    role, heads = _LEGACY[target]
    pre = meta["preprocessing"]["stage"]
    geometry: dict[str, Any] = {"size_zyx": list(pre["size_zyx"])}
    if pre["stage"] == "fine":
        geometry.update(region="roi", margin_mm=float(pre["margin_mm"]),
                        context=float(pre.get("context", 0.15)))
    names = {0: "SI", 1: "AP"}  # canonical (LPS) array axes
    axes = meta.get("mirror_axes")
    if axes is None:  # written before the field existed: flipped S-I and A-P when augmented
        axes = [0, 1] if meta.get("training", {}).get("augment") else []
    if not isinstance(axes, list) or any(a not in names for a in axes) or len(set(axes)) != len(
            axes):
        raise ModelError(f"mirror_axes {axes!r} is not a list of distinct axes from [0, 1]")
    args = {k: v for k, v in meta["architecture"]["args"].items()
            if k not in ("in_channels", "num_classes")}
    return {"role": role, "geometry": geometry,
            "network": {"arch": meta["architecture"]["name"], "args": args, "heads": heads},
            "augmentation": {"mirror": [names[a] for a in axes]} if axes else None}


def bundle_stage(folder: Path, meta: dict[str, Any]):
    """(recipe Stage, resolved Intensity) of a bundle; raises ModelError naming model.json."""
    from flarecli.core.preprocessing.intensity import Intensity
    from flarecli.core.recipes import spec as S
    from flarecli.core.recipes.typed import RecipeError, parse

    where = f"{Path(folder) / 'model.json'}"
    try:
        if meta["schema"] == 1:
            stage = parse(S.Stage, _legacy_stage(meta), "stage")
            intensity = Intensity.from_json(meta["preprocessing"]["intensity"])
        else:
            stage = parse(S.Stage, meta["stage"], "stage")
            intensity = Intensity.from_json(meta["intensity"])
    except RecipeError as e:
        raise ModelError(f"{where}: {e.message}", hint=e.hint) from None
    except ModelError as e:
        raise ModelError(f"{where}: {e.message}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{where}: incomplete stage record ({type(e).__name__}: {e})") from None
    return stage, intensity
