import numpy as np
import pytest

from flarecli.core.curation.audit import (
    audit_case,
    dataset_cases,
    label_group,
    summarize,
)
from flarecli.core.io.cases import Case, discover_cases
from flarecli.core.io.nifti import write_volume
from flarecli.core.labels import check_label_values
from tests.conftest import geom, write_case

SHAPE = (8, 10, 12)


def label_with(classes, shape=SHAPE):
    lab = np.zeros(shape, np.uint8)
    for i, c in enumerate(classes):
        lab.flat[i * 3: i * 3 + 2] = c
    return lab


def test_groups_and_categories(tmp_path):
    all13 = list(range(1, 14))
    specs = {
        "full": all13, "full_t": all13 + [14], "five": [1, 2, 3, 4, 13],
        "five_t": [1, 2, 3, 4, 13, 14], "tum": [14], "oth": [1, 5], "emp": [],
    }
    for cid, classes in specs.items():
        write_case(tmp_path, cid, label_with(classes))
    write_case(tmp_path, "unl", None)
    found = discover_cases(tmp_path / "imagesTr", tmp_path / "labelsTr")
    res = {c.id: audit_case(c) for c in found.cases}
    assert res["full"].group == "13_organs" and res["full"].organ_category == "full"
    assert res["full_t"].tumor and res["full_t"].n_classes == 14
    assert res["five"].group == "5_organs" and res["five"].organ_category == "partial"
    assert res["five_t"].group == "5_organs_tumor"
    assert res["tum"].group == "tumor_only" and res["tum"].organ_category == "none"
    assert res["oth"].group == "other" and res["oth"].organs == [1, 5]
    assert res["oth"].voxels == {1: 2, 5: 2}
    assert res["emp"].problems == ["label is empty (all background)"]
    assert res["unl"].group == "unlabeled" and not res["unl"].labeled
    s = summarize(list(res.values()))
    assert (s["cases"], s["labeled"], s["unlabeled"]) == (8, 7, 1)
    assert (s["organ_full"], s["organ_partial"], s["organ_none"]) == (2, 3, 2)
    assert (s["tumor"], s["no_tumor"], s["problems"]) == (3, 4, 1)
    assert s["cases_per_class"]["14"] == 3 and s["cases_per_class"]["1"] == 5
    assert s["n_classes_histogram"] == {"0": 1, "1": 1, "2": 1, "5": 1, "6": 1, "13": 1,
                                        "14": 1}


def test_label_value_checks():
    ok, probs = check_label_values(np.array([0, 1, 14], np.int16))
    assert probs == [] and ok.dtype == np.uint8
    fixed, probs = check_label_values(np.array([0, 1, 15, -2, 200], np.int32))
    assert probs == ["label values outside 0..14: -2, 15, 200"]
    assert fixed.tolist() == [0, 1, 0, 0, 0]
    none, probs = check_label_values(np.array([0, 1.5, 2.0], np.float32))
    assert none is None and "non-integer values (e.g. 1.5)" in probs[0]
    _, probs = check_label_values(np.array([0, 1.0000001], np.float64))  # not 'e.g. 1'
    assert "non-integer values (e.g. 1.0000001)" in probs[0]
    ints, probs = check_label_values(np.array([0.0, 2.0], np.float64))
    assert probs == [] and ints.tolist() == [0, 2]


def test_integrity_problems_are_each_detected(tmp_path):
    lab = label_with([1, 2])
    # geometry mismatches: shape, spacing, origin, direction
    write_case(tmp_path, "shape", lab)
    write_volume(tmp_path / "labelsTr" / "shape.nii.gz", np.zeros((8, 10, 13), np.uint8),
                 geom((8, 10, 13)))
    write_case(tmp_path, "spacing", lab)
    write_volume(tmp_path / "labelsTr" / "spacing.nii.gz", lab, geom(spacing_xyz=(1, 1, 2.5)))
    write_case(tmp_path, "origin", lab)
    write_volume(tmp_path / "labelsTr" / "origin.nii.gz", lab, geom(origin=(0, 3, 0)))
    write_case(tmp_path, "direction", lab)
    write_volume(tmp_path / "labelsTr" / "direction.nii.gz", lab,
                 geom(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)))
    # label values
    write_case(tmp_path, "values", lab)
    write_volume(tmp_path / "labelsTr" / "values.nii.gz", lab.astype(np.int16) * 9, geom())
    write_case(tmp_path, "float", lab)
    write_volume(tmp_path / "labelsTr" / "float.nii.gz", lab.astype(np.float32) * 0.5, geom())
    write_case(tmp_path, "empty", np.zeros(SHAPE, np.uint8))
    # image problems
    write_case(tmp_path, "nan", lab)
    write_nan_image(tmp_path / "imagesTr" / "nan_0000.nii.gz", SHAPE)
    write_case(tmp_path, "trunc", lab)
    p = tmp_path / "imagesTr" / "trunc_0000.nii.gz"
    p.write_bytes(p.read_bytes()[:200])
    import SimpleITK as sitk

    write_case(tmp_path, "flat", lab)
    sitk.WriteImage(sitk.Image(12, 10, sitk.sitkInt16), str(tmp_path / "imagesTr" /
                                                             "flat_0000.nii.gz"))
    write_case(tmp_path, "good", lab)

    found = discover_cases(tmp_path / "imagesTr", tmp_path / "labelsTr")
    res = {c.id: audit_case(c) for c in found.cases}
    expect = {
        "shape": "image vs label shape (12, 10, 8) vs (13, 10, 8)",
        "spacing": "image vs label spacing",
        "origin": "image vs label origin",
        "direction": "image vs label direction LPS vs RAS",
        "values": "label values outside 0..14: 18",
        "float": "non-integer values (e.g. 0.5)",
        "empty": "label is empty",
        "nan": "nan_0000.nii.gz: 5 NaN/inf voxels",
        "trunc": "trunc_0000.nii.gz: truncated",
        "flat": "2-D, expected 3-D",
    }
    for cid, text in expect.items():
        assert any(text in p for p in res[cid].problems), (cid, res[cid].problems)
    assert res["good"].problems == []
    # the other cases were still counted
    assert res["values"].organs == [9]  # 1*9 = 9 (gallbladder) is valid; 2*9 = 18 is not
    assert res["trunc"].organs == [1, 2]


def write_nan_image(path, shape):
    """ITK cannot write NaN (it stores 0), so patch the raw data block of a NIfTI-1 file."""
    import gzip
    import struct

    write_volume(path.with_suffix(""), np.zeros(shape, np.float32), geom(shape))
    raw = bytearray(path.with_suffix("").read_bytes())
    offset = int(struct.unpack("<f", raw[108:112])[0])
    raw[offset:offset + 20] = np.array([np.nan, np.inf, -np.inf, np.nan, -np.inf], "<f4").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    path.with_suffix("").unlink()


def test_dataset_layout_includes_unlabeled_folder(tmp_path):
    write_case(tmp_path, "a", label_with([1]))
    write_case(tmp_path, "u", None, images="imagesUn")
    found = dataset_cases(tmp_path)
    assert [(c.id, c.labeled) for c in found.cases] == [("a", True), ("u", False)]


def test_dataset_json_with_foreign_labels_is_reported(tmp_path):
    import json

    write_case(tmp_path, "a", label_with([1]))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "bowel": 20}}))
    found = dataset_cases(tmp_path)
    assert [m for _, m in found.problems] == ["label id 20 ('bowel') is not a FLARE id (0..14)"]
    (tmp_path / "dataset.json").write_text("{")
    assert "unreadable dataset.json" in dataset_cases(tmp_path).problems[0][1]


def test_label_group_unlabeled():
    assert label_group(False, [], False) == "unlabeled"


def test_real_ct_is_partial_12_organs_no_tumor(shared_ct):
    image, label = shared_ct
    r = audit_case(Case("ts_example", image, label))
    assert r.problems == []
    assert r.organs == [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    assert r.organ_category == "partial" and not r.tumor and r.group == "other"
    assert r.orientation == "RAS" and r.shape_xyz == [122, 101, 112]


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_audit_exit_codes_and_manifest(tmp_path, run_cli, workers):
    import json

    write_case(tmp_path, "a", label_with([1, 2, 3, 4, 13]))
    write_case(tmp_path, "b", np.zeros(SHAPE, np.uint8))
    write_case(tmp_path, "c", None, images="imagesUn")
    res = run_cli("audit", tmp_path, "--json", tmp_path / "m.json", "--csv", tmp_path / "m.csv",
                  "-j", workers)
    assert res.code == 4
    assert "error: b: label is empty (all background)" in res.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["schema_version"] == 1
    assert [c["id"] for c in m["cases"]] == ["a", "b", "c"]
    a = m["cases"][0]
    assert a["organs"] == [1, 2, 3, 4, 13] and a["organ_category"] == "partial"
    assert a["labeled"] is True and a["tumor"] is False and a["problems"] == []
    assert m["summary"]["labeled"] == 2 and m["summary"]["unlabeled"] == 1
    assert m["summary"]["problems"] == 1
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header.startswith("id,labeled,group,organ_category,organs,tumor")
    # a clean dataset exits 0
    (tmp_path / "labelsTr" / "b.nii.gz").unlink()
    assert run_cli("audit", tmp_path).code == 0


def test_cli_audit_bad_input(tmp_path, run_cli):
    res = run_cli("audit", tmp_path / "nope")
    assert res.code == 3 and "nope: dataset folder not found" in res.stderr
    res = run_cli("audit", tmp_path)
    assert res.code == 3 and "no imagesTr/ folder" in res.stderr
    res = run_cli("audit")
    assert res.code == 3
    res = run_cli("audit", tmp_path, "--images", tmp_path)
    assert res.code == 3 and "not both" in res.stderr
    res = run_cli("audit", tmp_path, "--workers", "0")
    assert res.code == 2
