"""dataset.json: nnU-Net v2 written, v1 and v2 read."""

import json

import pytest

from flarecli.core.errors import InputError
from flarecli.core.io.dataset_json import dataset_json, read_dataset_json
from flarecli.core.labels import (
    LABELS,
    check_flare_labels,
)


def test_dataset_json_v2_round_trip_and_v1(tmp_path):
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(dataset_json("x", 3)))
    d = read_dataset_json(p)
    assert d["label_ids"] == LABELS and d["numTraining"] == 3
    p.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "15": "bowel"}}))
    d = read_dataset_json(p)
    assert d["label_ids"] == {0: "background", 1: "liver", 15: "bowel"}
    assert check_flare_labels(d["label_ids"]) == ["label id 15 ('bowel') is not a FLARE id (0..14)"]


def test_dataset_json_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_dataset_json(tmp_path / "dataset.json")
    (tmp_path / "dataset.json").write_text("{bad")
    with pytest.raises(InputError, match="unreadable"):
        read_dataset_json(tmp_path / "dataset.json")
