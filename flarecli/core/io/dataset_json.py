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


def label_id(value: Any) -> int:
    """A label id as dataset.json gives it: an integer 0..255 (a label map's voxel value), as
    a number or a string of digits. ``1.5``, ``true`` or ``[1, 2]`` (nnU-Net's region-based
    labels) are no label id: ``int()`` would have read 1.5 and true as 1."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer label id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer label id")
    if not 0 <= value <= 255:
        raise ValueError(f"label id {value} is outside 0..255")
    return value


def read_dataset_json(path: Path) -> dict[str, Any]:
    """Read a ``dataset.json`` (nnU-Net v1 or v2). Adds ``label_ids``: {id: name}.

    v2 maps name -> id (``{"liver": 1}``), v1 maps id -> name (``{"1": "liver"}``); both are
    accepted. Raises InputError for unreadable JSON or a label map that is neither.
    """
    data = read_json(path, "dataset.json")
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{path}: dataset.json has no 'labels' mapping")
    try:
        if all(str(k).strip().lstrip("-").isdigit() for k in labels):  # v1: id -> name
            pairs = [(label_id(k), str(v)) for k, v in labels.items()]
        else:  # v2: name -> id (region-based lists are not used by FLARE)
            pairs = [(label_id(v), str(k)) for k, v in labels.items()]
    except ValueError as e:
        raise InputError(f"{path}: 'labels' is neither id->name nor name->id ({e})") from e
    ids: dict[int, str] = {}
    for i, name in pairs:
        if i in ids:  # a dict would keep only one of them
            raise InputError(f"{path}: labels '{ids[i]}' and '{name}' have the same id {i}")
        ids[i] = name
    data["label_ids"] = ids
    return data
