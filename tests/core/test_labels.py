import json

import pytest

from flarecli.core.errors import InputError
from flarecli.core.labels import (
    CLASSES,
    LABELS,
    NSD_TOLERANCE_MM,
    ORGANS,
    TUMOR,
    check_flare_labels,
    dataset_json,
    read_dataset_json,
)


def test_schema():
    assert len(ORGANS) == 13 and TUMOR == 14 and CLASSES == tuple(range(1, 15))
    assert LABELS[1] == "liver" and LABELS[13] == "left_kidney" and LABELS[14] == "tumor"
    assert NSD_TOLERANCE_MM[12] == 7 and NSD_TOLERANCE_MM[5] == 2 and set(NSD_TOLERANCE_MM) == \
        set(CLASSES)


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
