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


def test_names_flare_knows_under_other_ids_and_shared_ids_are_problems(tmp_path):
    """A dataset.json mapping 'liver' to 6 passed audit and trained without a word: its label
    maps would be read as FLARE's (6 is the IVC)."""
    flare23 = {"background": 0, "liver": 1, "right_kidney": 2, "spleen": 3, "pancreas": 4,
               "aorta": 5, "ivc": 6, "rag": 7, "lag": 8, "gallbladder": 9, "esophagus": 10,
               "stomach": 11, "duodenum": 12, "left_kidney": 13, "tumor": 14}
    assert check_flare_labels({i: n for n, i in flare23.items()}) == []
    assert check_flare_labels({1: "Liver", 2: "Kidney R", 13: "kidney_left", 14: "Lesion",
                               12: "small bowel"}) == []  # spellings, and a name not judged
    assert check_flare_labels({1: "ivc", 6: "liver"}) == [
        "label 'ivc' has id 1, but FLARE's ivc is 6 (id 1 is liver)",
        "label 'liver' has id 6, but FLARE's liver is 1 (id 6 is ivc)"]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 1}}))
    with pytest.raises(InputError, match="labels 'liver' and 'spleen' have the same id 1"):
        read_dataset_json(path)


@pytest.mark.parametrize("labels, problem", [
    ({"background": 0, "liver": 1.5}, "1.5 is not an integer label id"),
    ({"background": 0, "liver": True}, "True is not an integer label id"),
    ({"background": 0, "tumor": [1, 2]}, r"\[1, 2\] is not an integer label id"),
    ({"background": 0, "liver": 300}, "label id 300 is outside 0..255"),
    ({"0": "background", "1": "liver", "01": "spleen"}, "'liver' and 'spleen' have the same id 1"),
])
def test_a_label_id_that_is_no_voxel_value_is_refused_not_truncated(tmp_path, labels, problem):
    """int() read 1.5 and true as 1, so a broken dataset.json passed audit as FLARE's."""
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": labels}))
    with pytest.raises(InputError, match=problem):
        read_dataset_json(path)


def test_integral_numbers_and_digit_strings_are_ids(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "liver": 1.0, "spleen": "3"}}))
    assert read_dataset_json(path)["label_ids"] == {0: "background", 1: "liver", 3: "spleen"}
