"""Lesion-wise tumor figures on hand-made cases with known answers."""

import json

import numpy as np
import pytest

from flarecli.core.io.nifti import write_volume
from flarecli.core.labels import MIN_TUMOR_MM3
from flarecli.core.metrics.lesions import CaseLesions, match_lesions, summarize_lesions
from tests.conftest import geom

T = 14


def volume(shape=(20, 30, 40)):
    return np.zeros(shape, np.uint8)


def put(labels, z, y, x, value=T):
    labels[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = value
    return labels


def test_one_lesion_found_one_missed_and_a_false_positive():
    gt, pred = volume(), volume()
    put(gt, (2, 8), (2, 8), (2, 8))  # A: 216 voxels
    put(gt, (10, 15), (20, 25), (30, 35))  # B: 125 voxels
    put(pred, (3, 9), (2, 8), (2, 8))  # A shifted by one slice: 180 voxels shared
    put(pred, (12, 17), (2, 7), (30, 35))  # nowhere near a lesion: 125 voxels
    put(gt, (0, 1), (0, 1), (0, 4), value=1)  # organs do not matter
    r = match_lesions(gt, pred, 1.0)
    assert (r.true_lesions, r.detected, r.missed, r.false_positives, r.predicted) == \
        (2, 1, 1, 1, 2)
    assert r.volumes_ml == [0.216, 0.125]  # largest first, 1 mm^3 voxels
    assert r.dscs == [pytest.approx(2 * 180 / (216 + 216)), None]
    assert r.sensitivity == 0.5


def test_a_lesion_split_in_two_is_one_detection_and_no_false_positive():
    gt, pred = volume(), volume()
    put(gt, (2, 6), (2, 8), (2, 22))  # 4 x 6 x 20 = 480 voxels
    put(pred, (2, 6), (2, 8), (2, 10))  # 192 voxels
    put(pred, (2, 6), (2, 8), (14, 22))  # 192 voxels, not touching the first
    r = match_lesions(gt, pred, 1.0)
    assert (r.true_lesions, r.detected, r.false_positives, r.predicted) == (1, 1, 0, 2)
    # the lesion's DSC is against the union of both pieces
    assert r.dscs == [pytest.approx(2 * 384 / (480 + 384))]


def test_a_prediction_merging_two_lesions_detects_both():
    gt, pred = volume(), volume()
    put(gt, (2, 7), (2, 7), (2, 7))  # 125
    put(gt, (2, 7), (2, 7), (9, 14))  # 125, two voxels apart
    put(pred, (2, 7), (2, 7), (2, 14))  # one component over both: 300
    r = match_lesions(gt, pred, 1.0)
    assert (r.true_lesions, r.detected, r.false_positives, r.predicted) == (2, 2, 0, 1)
    # each lesion against the whole merged component
    assert r.dscs == [pytest.approx(2 * 125 / (125 + 300))] * 2


def test_empty_truth_and_empty_prediction():
    r = match_lesions(volume(), volume(), 1.0)
    assert (r.true_lesions, r.detected, r.false_positives, r.predicted) == (0, 0, 0, 0)
    assert r.sensitivity is None
    s = summarize_lesions({"empty": r}, MIN_TUMOR_MM3)
    assert s["sensitivity"] is None and s["f1"] is None and s["precision"] is None
    assert s["fp_per_case"] == 0.0 and s["cases"] == 1


def test_f1_is_zero_when_only_one_of_its_ratios_is_undefined():
    """Every lesion missed with nothing predicted, or only false positives where there is no
    lesion: F1 is 0 (as 2TP / (2TP + FP + FN) gives), not undefined; precision or
    sensitivity alone has no denominator."""
    gt, pred = volume(), volume()
    put(gt, (2, 8), (2, 8), (2, 8))
    put(pred, (12, 17), (2, 7), (30, 35))
    missed = summarize_lesions({"a": match_lesions(gt, volume(), 1.0)}, 1.0)
    assert (missed["sensitivity"], missed["precision"], missed["f1"]) == (0.0, None, 0.0)
    false = summarize_lesions({"a": match_lesions(volume(), pred, 1.0)}, 1.0)
    assert (false["sensitivity"], false["precision"], false["f1"]) == (None, 0.0, 0.0)
    # pooled: a case with an empty truth and one that misses its lesion
    both = summarize_lesions({"a": match_lesions(volume(), pred, 1.0),
                              "b": match_lesions(gt, volume(), 1.0)}, 1.0)
    assert (both["sensitivity"], both["precision"], both["f1"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("shared,matched", [(10, True), (9, False)])
def test_match_needs_ten_percent_of_the_smaller_component(shared, matched):
    gt = put(volume((12, 12, 120)), (0, 10), (0, 10), (0, 10))  # 1000 voxels
    # a rod of 100 voxels, `shared` of them inside the lesion: 10 % of the smaller is 10
    pred = put(volume((12, 12, 120)), (0, 1), (0, 1), (10 - shared, 110 - shared))
    assert int(((gt == T) & (pred == T)).sum()) == shared
    r = match_lesions(gt, pred, 1.0)
    assert (r.detected, r.false_positives) == ((1, 0) if matched else (0, 1))


@pytest.mark.parametrize("spacing_xyz,is_lesion", [
    ((0.8, 0.8, 2.5), True),  # 63 voxels x 1.6 mm^3 = 100.8 mm^3
    ((0.8, 0.8, 2.48), False),  # 63 x 1.5872 = 99.99 mm^3: below 100, ignored
])
def test_the_minimum_volume_is_physical(spacing_xyz, is_lesion):
    g = geom((20, 30, 40), spacing_xyz=spacing_xyz)
    gt, pred = volume(), volume()
    put(gt, (2, 9), (2, 5), (2, 5))  # 7 x 3 x 3 = 63 voxels
    put(pred, (12, 19), (20, 23), (30, 33))  # 63 voxels elsewhere
    r = match_lesions(gt, pred, g.voxel_volume_mm3, MIN_TUMOR_MM3)
    assert (r.true_lesions, r.false_positives) == ((1, 1) if is_lesion else (0, 0))
    if is_lesion:
        assert r.volumes_ml == [pytest.approx(0.1008)]


def test_small_components_take_no_part_in_matching():
    gt, pred = volume(), volume()
    put(gt, (2, 8), (2, 8), (2, 8))  # 216 voxels
    put(pred, (2, 4), (2, 4), (2, 4))  # 8 voxels inside the lesion: below the minimum
    r = match_lesions(gt, pred, 1.0, 100.0)
    assert (r.detected, r.missed, r.predicted) == (0, 1, 0)


def test_box_gives_the_whole_volume_result():
    gt, pred = volume(), volume()
    put(gt, (2, 8), (2, 8), (2, 8))
    put(pred, (3, 9), (4, 9), (2, 8))
    put(pred, (12, 17), (2, 7), (30, 35))
    whole = match_lesions(gt, pred, 1.0)
    boxed = match_lesions(gt, pred, 1.0, box=(slice(2, 17), slice(2, 9), slice(2, 35)))
    assert whole == boxed


def test_summary_pools_lesions_and_bins_them_by_size():
    cases = {
        # lesions of 0.5, 1, 10 and 12 ml; the 0.5 and 10 ml ones found; 3 predicted, 1 FP
        "a": CaseLesions([12.0, 10.0, 1.0, 0.5], [None, 0.8, None, 0.6], predicted=3,
                         false_positives=1),
        "b": CaseLesions([], [], predicted=2, false_positives=2),  # no lesion: 2 FP
        "c": CaseLesions([2.0], [0.7], predicted=1, false_positives=0),
    }
    s = summarize_lesions(cases, 100.0)
    assert (s["true_lesions"], s["detected"], s["missed"]) == (5, 3, 2)
    assert s["sensitivity"] == pytest.approx(3 / 5)
    assert s["fp_per_case"] == pytest.approx(3 / 3)
    assert s["precision"] == pytest.approx(3 / 6)  # 6 predicted components, 3 matched
    assert s["f1"] == pytest.approx(2 * 0.5 * 0.6 / (0.5 + 0.6))
    assert s["by_size"]["under_1ml"] == {"lesions": 1, "detected": 1, "sensitivity": 1.0}
    assert s["by_size"]["1_to_10ml"] == {"lesions": 3, "detected": 2,
                                         "sensitivity": pytest.approx(2 / 3)}
    assert s["by_size"]["over_10ml"] == {"lesions": 1, "detected": 0, "sensitivity": 0.0}
    assert s["sensitivity_1ml_or_more"] == pytest.approx(2 / 4)
    assert s["dsc_detected_mean"] == pytest.approx((0.8 + 0.6 + 0.7) / 3)
    assert s["per_case"]["b"]["sensitivity"] is None
    assert s["per_case"]["a"]["dscs"] == [None, 0.8, None, 0.6]


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def test_cli_writes_lesions_to_json_csv_and_the_table(tmp_path, run_cli):
    g = geom((20, 30, 40), spacing_xyz=(0.8, 0.8, 2.5))  # 1.6 mm^3 voxels
    gt, pred = volume(), volume()
    put(gt, (2, 8), (2, 8), (2, 8))  # 216 voxels = 0.3456 ml, found
    put(gt, (10, 15), (20, 25), (30, 35))  # 125 voxels = 0.2 ml, missed
    put(pred, (3, 9), (2, 8), (2, 8))
    put(pred, (12, 17), (2, 7), (30, 35))  # a false positive
    write_volume(tmp_path / "gt" / "a.nii.gz", gt, g)
    write_volume(tmp_path / "pred" / "a.nii.gz", pred, g)
    write_volume(tmp_path / "gt" / "b.nii.gz", volume(), g)  # no tumor, none predicted
    write_volume(tmp_path / "pred" / "b.nii.gz", volume(), g)
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "s.json",
                  "--csv", tmp_path / "s.csv")
    assert res.code == 0, res.stderr
    lesions = json.loads((tmp_path / "s.json").read_text())["lesions"]
    assert lesions["min_lesion_mm3"] == MIN_TUMOR_MM3
    assert lesions["sensitivity"] == 0.5 and lesions["fp_per_case"] == 0.5
    assert lesions["f1"] == pytest.approx(0.5)  # precision 1/2, sensitivity 1/2
    assert lesions["per_case"]["a"]["volumes_ml"] == [0.3456, 0.2]
    assert lesions["per_case"]["b"]["true_lesions"] == 0
    import csv

    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    tumor = next(r for r in rows if r["case"] == "a" and r["label"] == "14")
    assert (tumor["true_lesions"], tumor["detected"], tumor["missed"],
            tumor["false_positives"]) == ("2", "1", "1", "1")
    assert tumor["lesion_volumes_ml"] == "0.3456;0.2"
    assert tumor["lesion_dscs"] == format(2 * 180 / 432, ".10g") + ";"
    liver = next(r for r in rows if r["case"] == "a" and r["label"] == "1")
    assert liver["true_lesions"] == "" and liver["dsc"] == "1"  # other rows unchanged
    assert "1 of 2 found, sensitivity 0.50" in res.stdout and "0.50 FP/case" in res.stdout

    # a larger minimum: the 0.2 ml lesion and the 0.2 ml false positive are gone
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "s.json",
                  "--min-lesion-mm3", "300")
    lesions = json.loads((tmp_path / "s.json").read_text())["lesions"]
    assert (lesions["true_lesions"], lesions["sensitivity"], lesions["fp_per_case"]) == \
        (1, 1.0, 0.0)
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--min-lesion-mm3", "-1")
    assert res.code == 3 and "--min-lesion-mm3 -1" in res.stderr


def test_cli_leaves_cases_without_tumor_annotation_out_of_the_lesions(tmp_path, run_cli):
    g = geom((20, 30, 40))
    pred = put(volume(), (2, 8), (2, 8), (2, 8))  # a tumor the truth may not annotate
    for case in ("a", "b"):
        write_volume(tmp_path / "gt" / f"{case}.nii.gz", put(volume(), (0, 2), (0, 2), (0, 2),
                                                             1), g)
        write_volume(tmp_path / "pred" / f"{case}.nii.gz", pred, g)
    manifest = {"schema_version": 1, "cases": [{"id": "a", "organs": [1], "tumor": False},
                                               {"id": "b", "organs": [1], "tumor": True}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "s.json",
                  "--manifest", tmp_path / "m.json")
    assert res.code == 0, res.stderr
    lesions = json.loads((tmp_path / "s.json").read_text())["lesions"]
    assert lesions["cases"] == 1 and list(lesions["per_case"]) == ["b"]
    assert lesions["false_positives"] == 1 and lesions["fp_per_case"] == 1.0
