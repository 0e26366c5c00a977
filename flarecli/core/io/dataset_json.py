"""The nnU-Net style ``dataset.json`` of a FLARE dataset: written by ``flare synth``, read by
``flare audit`` (nnU-Net v1 and v2 label maps both)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError
from flarecli.core.io.files import read_json
from flarecli.core.labels import LABELS


def dataset_json(
    name: str,
    num_training: int,
    description: str = "",
    file_ending: str = ".nii.gz",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An nnU-Net v2 ``dataset.json`` for the FLARE labels (plus flare's own extra keys)."""
    data: dict[str, Any] = {
        "name": name,
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": {LABELS[i]: i for i in sorted(LABELS)},
        "numTraining": int(num_training),
        "file_ending": file_ending,
    }
    if extra:
        data.update(extra)
    return data


def read_dataset_json(path: Path) -> dict[str, Any]:
    """Read a ``dataset.json`` (nnU-Net v1 or v2). Adds ``label_ids``: {id: name}.

    v2 maps name -> id (``{"liver": 1}``), v1 maps id -> name (``{"1": "liver"}``); both are
    accepted. Raises InputError for unreadable JSON or a label map that is neither.
    """
    data = read_json(path, "dataset.json")
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{path}: dataset.json has no 'labels' mapping")
    ids: dict[int, str] = {}
    try:
        if all(str(k).lstrip("-").isdigit() for k in labels):  # v1: id -> name
            ids = {int(k): str(v) for k, v in labels.items()}
        else:  # v2: name -> id (region-based lists are not used by FLARE)
            pairs = [(int(v), str(k)) for k, v in labels.items()]
            ids = dict(pairs)
            if len(ids) < len(pairs):  # two names on one id: the dict kept only one
                seen: dict[int, str] = {}
                for i, name in pairs:
                    if i in seen:
                        raise InputError(f"{path}: labels '{seen[i]}' and '{name}' have the "
                                         f"same id {i}")
                    seen[i] = name
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: 'labels' is neither id->name nor name->id ({e})") from e
    data["label_ids"] = ids
    return data
