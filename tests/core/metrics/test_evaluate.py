"""FLARE rules of flare evaluate: empty cases, tubular crops, protocols, partial labels."""

import json

import numpy as np
import pytest
from scipy import ndimage

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume
from flarecli.core.metrics.evaluate import CaseResult, score_labels, summarize
from tests.conftest import geom
from tests.reference import reference_scores


def by_label(scores):
    return {s.label: s for s in scores}


def test_empty_rules():
    g = geom((10, 10, 10))
    gt = np.zeros(g.shape_zyx, np.uint8)
    pred = gt.copy()
    gt[2:5, 2:5, 2:5] = 1  # liver in GT only
    pred[6:8, 6:8, 6:8] = 3  # spleen in prediction only
    s = by_label(score_labels(gt, pred, g))
    assert (s[1].dsc, s[1].nsd) == (0.0, 0.0)
    assert (s[3].dsc, s[3].nsd) == (0.0, 0.0)
    assert (s[2].dsc, s[2].nsd) == (1.0, 1.0)  # absent from both
    assert s[1].gt_voxels == 27 and s[3].pred_voxels == 8


def test_nsd_threshold():
    g = geom((20, 20, 40))
    gt = np.zeros(g.shape_zyx, np.uint8)
    pred = gt.copy()
    gt[5:15, 5:15, 5:15] = 1
    pred[5:15, 5:15, 13:23] = 1  # DSC = 0.2 - 0.05 = 0.2? -> 2/10 overlap: DSC 0.2
    s = by_label(score_labels(gt, pred, g, nsd_threshold=0.2))[1]
    assert s.dsc == pytest.approx(0.2) and s.nsd > 0  # not below the threshold
    pred[:] = 0
    pred[5:15, 5:15, 14:24] = 1  # DSC 0.1 < 0.2 -> NSD forced to 0
    s = by_label(score_labels(gt, pred, g, nsd_threshold=0.2))[1]
    assert s.dsc == pytest.approx(0.1) and s.nsd == 0.0
    s = by_label(score_labels(gt, pred, g, nsd_threshold=0.1))[1]
    assert s.nsd > 0.0


def tube(shape, z0, z1, label=5):
    m = np.zeros(shape, np.uint8)
    m[z0:z1, 4:8, 4:8] = label
    return m


def test_flare23_drops_the_top_gt_slice_of_tubular_classes():
    g = geom((12, 12, 12))
    gt = tube(g.shape_zyx, 2, 6)  # aorta on slices 2..5
    pred = tube(g.shape_zyx, 2, 5)  # misses slice 5
    exact = by_label(score_labels(gt, pred, g, "exact"))[5]
    official = by_label(score_labels(gt, pred, g, "flare23"))[5]
    assert exact.dsc == pytest.approx(6 / 7)
    assert official.dsc == 1.0  # the official crop [2:5] never sees slice 5
    # a prediction outside the GT slice range is not scored for tubular classes
    pred2 = tube(g.shape_zyx, 0, 10)
    assert by_label(score_labels(gt, pred2, g, "exact"))[5].dsc == 1.0
    # the same for a non-tubular class is penalised
    assert by_label(score_labels(gt * 0 + (gt > 0), (pred2 > 0).astype(np.uint8), g))[1].dsc < 1


def test_flare23_single_slice_gt_gives_nan_like_the_official_script():
    g = geom((12, 12, 12))
    gt = tube(g.shape_zyx, 3, 4, label=10)
    s = by_label(score_labels(gt, gt, g, "flare23"))[10]
    assert np.isnan(s.dsc) and np.isnan(s.nsd)
    assert by_label(score_labels(gt, gt, g, "exact"))[10].dsc == 1.0


def test_exact_protocol_crops_along_the_true_superior_axis():
    # voxel axis i (array axis 2) points superior: a sagittally stored scan
    g = geom((12, 12, 16), direction=(0, 1, 0, 0, 0, 1, 1, 0, 0))
    assert g.superior_axis() == 2
    gt = np.zeros(g.shape_zyx, np.uint8)
    gt[4:8, 4:8, 3:9] = 6  # IVC spanning i = 3..8
    pred = np.zeros_like(gt)
    pred[4:8, 4:8, 0:16] = 6
    exact = by_label(score_labels(gt, pred, g, "exact"))[6]
    official = by_label(score_labels(gt, pred, g, "flare23"))[6]
    assert exact.dsc == 1.0
    assert official.dsc < 1.0  # the official script crops array axis 0 whatever the direction


def test_flipped_direction_scores_like_identity():
    gt = np.zeros((10, 12, 14), np.uint8)
    gt[2:8, 3:9, 4:10] = 1
    pred = np.roll(gt, 1, axis=2)
    a = score_labels(gt, pred, geom(gt.shape, spacing_xyz=(0.8, 0.8, 2.5)))
    b = score_labels(gt, pred, geom(gt.shape, spacing_xyz=(0.8, 0.8, 2.5),
                                    direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)))
    assert [(s.dsc, s.nsd) for s in a] == [(s.dsc, s.nsd) for s in b]


def test_partial_label_awareness():
    g = geom((10, 10, 10))
    gt = np.zeros(g.shape_zyx, np.uint8)
    gt[2:5, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[6:8, 6:8, 6:8] = 3  # spleen predicted; GT does not annotate spleen
    s = by_label(score_labels(gt, pred, g, annotated={1}))
    assert s[1].dsc == 1.0 and s[3].dsc is None and not s[3].annotated
    summary = summarize([CaseResult("a", list(s.values()))], "exact", 0.2)
    assert summary["per_class"]["3"]["dsc"] is None and summary["per_class"]["3"]["n"] == 0
    assert summary["organ_dsc"] == 1.0  # mean over the annotated classes only


def random_labels(rng, shape):
    lab = np.zeros(shape, np.uint8)
    for c in range(1, 15):
        f = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        lab[f > np.quantile(f, rng.uniform(0.93, 0.995))] = c
    return lab


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("protocol", ["exact", "flare23"])
def test_agrees_with_whole_volume_reference(seed, protocol):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(10, 24)), 26, 22)
    spacing = tuple(float(v) for v in rng.uniform(0.6, 3.0, 3))
    gt = random_labels(rng, shape)
    pred = gt.copy()
    noise = random_labels(rng, shape)
    pred[noise > 0] = noise[noise > 0]
    g = Geometry(shape, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    fast = by_label(score_labels(gt, pred, g, protocol))
    slow = reference_scores(gt, pred, spacing, flare23=protocol == "flare23")
    for c, (d, n) in slow.items():
        if protocol == "flare23":
            d, n = round(d, 4), round(n, 4)
        assert fast[c].dsc == pytest.approx(d, abs=1e-12, nan_ok=True), c
        assert fast[c].nsd == pytest.approx(n, abs=1e-12, nan_ok=True), c


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def write(path, array, g):
    write_volume(path, array, g)


def test_cli_evaluate_outputs_and_bad_input(tmp_path, run_cli):
    g = geom((10, 12, 14), spacing_xyz=(0.8, 0.8, 2.5), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    gt = np.zeros(g.shape_zyx, np.uint8)
    gt[2:8, 3:9, 4:10] = 1
    gt[1:9, 5:7, 1:3] = 5
    for case in ("a", "b", "c", "d", "e"):
        write(tmp_path / "gt" / f"{case}.nii.gz", gt, g)
    write(tmp_path / "pred" / "a.nii.gz", gt, g)  # perfect
    write(tmp_path / "pred" / "b.nii.gz", np.roll(gt, 1, axis=2), g)
    # c: no prediction; d: wrong grid; e: non-integer labels
    write(tmp_path / "pred" / "d.nii.gz", gt, geom((10, 12, 14), spacing_xyz=(1, 1, 1)))
    write(tmp_path / "pred" / "e.nii.gz", gt.astype(np.float32) * 0.5, g)
    write(tmp_path / "pred" / "zzz.nii.gz", gt, g)  # no GT
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--csv", tmp_path / "s.csv",
                  "--json", tmp_path / "s.json")
    assert res.code == 4
    assert "error: d: prediction vs ground truth spacing" in res.stderr
    assert "error: e: e.nii.gz: prediction has non-integer values" in res.stderr
    assert "c: no prediction, scored as empty" in res.stderr
    assert "note: zzz: prediction has no ground truth" in res.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("case,label,name,dsc,nsd")
    assert len(lines) == 1 + 3 * 14  # a, b, c scored
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["failed_cases"] == ["d", "e"] and s["missing_predictions"] == ["c"]
    liver = s["per_class"]["1"]
    assert liver["n"] == 3 and liver["dsc"] == pytest.approx((1 + 5 / 6 + 0) / 3)
    for key in ("organ_dsc", "organ_nsd", "tumor_dsc", "tumor_nsd"):
        assert key in s
    assert s["tumor_dsc"] == 1.0  # absent everywhere
    assert "organs (mean of 13)" in res.stdout

    res = run_cli("evaluate", tmp_path / "nope", tmp_path / "gt")
    assert res.code == 3 and "nope: predictions folder not found" in res.stderr
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--protocol", "flare22")
    assert res.code == 3 and "did you mean 'flare23'" in res.stderr


def test_cli_evaluate_with_manifest(tmp_path, run_cli):
    g = geom((10, 12, 14))
    gt = np.zeros(g.shape_zyx, np.uint8)
    gt[2:8, 3:9, 4:10] = 1
    write(tmp_path / "gt" / "a.nii.gz", gt, g)
    pred = gt.copy()
    pred[0:2, 0:2, 0:2] = 3
    write(tmp_path / "pred" / "a.nii.gz", pred, g)
    manifest = {"schema_version": 1, "cases": [{"id": "a", "organs": [1], "tumor": False}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "o.json",
                  "--manifest", tmp_path / "m.json")
    assert res.code == 0
    s = json.loads((tmp_path / "o.json").read_text())
    assert s["organ_dsc"] == 1.0 and s["per_class"]["3"]["dsc"] is None
    assert s["organ_classes"] == 1 and "organs (mean of 1)" in res.stdout
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "o.json")
    assert res.code == 0
    s = json.loads((tmp_path / "o.json").read_text())
    assert s["per_class"]["3"]["dsc"] == 0.0  # the official rule: a false positive
    assert s["organ_classes"] == 13 and "organs (mean of 13)" in res.stdout


def test_real_ct_labels_agree_with_reference(shared_ct):
    from flarecli.core.io.nifti import read_volume
    from flarecli.core.postprocessing.components import postprocess

    _, label_path = shared_ct
    gt, g = read_volume(label_path)
    gt = gt.astype(np.uint8)
    perfect = by_label(score_labels(gt, gt, g))
    assert all(s.dsc == 1.0 and s.nsd == 1.0 for s in perfect.values())
    pred = np.roll(gt, 1, axis=0)  # one 3 mm slice off
    pred = postprocess(pred, g.voxel_volume_mm3)[0]
    fast = by_label(score_labels(gt, pred, g, "flare23"))
    slow = reference_scores(gt, pred, g.spacing_xyz, flare23=True)
    for c, (d, n) in slow.items():
        assert fast[c].dsc == pytest.approx(round(d, 4), abs=1e-12), c
        assert fast[c].nsd == pytest.approx(round(n, 4), abs=1e-12), c
    # a 3 mm shift is within the liver's 5 mm tolerance but not the aorta's 2 mm
    assert fast[1].nsd > 0.95 and fast[5].nsd < fast[1].nsd


@pytest.mark.parametrize("shape", [(5, 7, 16), (6, 9, 11), (1, 1, 8)])
def test_class_boxes_are_find_objects(shape):
    from flarecli.core.metrics.evaluate import class_boxes

    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.001, 0.05, 0.5):
        labels = np.where(rng.random(shape) < density, rng.integers(1, 15, shape), 0)
        labels = labels.astype(np.uint8)
        assert class_boxes(labels) == ndimage.find_objects(labels, max_label=14)
        view = labels[:, :, ::-1]  # not contiguous: no 8-voxel rows
        assert class_boxes(view) == ndimage.find_objects(view, max_label=14)


def test_evaluate_cases_threads_keep_the_order_and_the_values(tmp_path):
    from flarecli.core.metrics.evaluate import evaluate_case, evaluate_cases, plan_jobs

    g = geom((10, 12, 14), spacing_xyz=(0.8, 0.8, 2.5))
    rng = np.random.default_rng(0)
    for i in range(5):
        gt = random_labels(rng, g.shape_zyx)
        write(tmp_path / "gt" / f"c{i}.nii.gz", gt, g)
        write(tmp_path / "pred" / f"c{i}.nii.gz", np.roll(gt, i % 3, axis=i % 3), g)
    jobs = plan_jobs(tmp_path / "pred", tmp_path / "gt", "exact", 0.2).jobs
    threaded = list(evaluate_cases(jobs))
    assert [r.case for r in threaded] == [f"c{i}" for i in range(5)]
    for r, job in zip(threaded, jobs, strict=True):
        assert r.scores == evaluate_case(job).scores


def test_grid_mismatch_names_the_prediction_first(tmp_path, run_cli):
    g = geom((10, 12, 14), spacing_xyz=(0.8, 0.8, 2.5))
    gt = np.zeros(g.shape_zyx, np.uint8)
    gt[2:8, 3:9, 4:10] = 1
    other = {
        "shape": geom((10, 12, 15), spacing_xyz=(0.8, 0.8, 2.5)),
        "spacing": geom((10, 12, 14), spacing_xyz=(1.0, 0.8, 2.5)),
        "origin": geom((10, 12, 14), spacing_xyz=(0.8, 0.8, 2.5), origin=(5.0, 0.0, 0.0)),
    }
    for case, pred_grid in other.items():
        write(tmp_path / "gt" / f"{case}.nii.gz", gt, g)
        pred = np.zeros(pred_grid.shape_zyx, np.uint8)
        write(tmp_path / "pred" / f"{case}.nii.gz", pred, pred_grid)
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt")
    assert res.code == 4
    assert "shape: prediction vs ground truth shape (15, 12, 10) vs (14, 12, 10)" in res.stderr
    assert ("spacing: prediction vs ground truth spacing (1, 0.8, 2.5) vs (0.8, 0.8, 2.5) mm"
            in res.stderr)
    assert "origin: prediction vs ground truth origin (5, 0, 0) vs (0, 0, 0) mm" in res.stderr


def test_cli_notes_once_classes_the_truth_lacks(tmp_path, run_cli):
    g = geom((10, 12, 14))
    liver = np.zeros(g.shape_zyx, np.uint8)
    liver[2:8, 3:9, 4:10] = 1
    gt_b = liver.copy()
    gt_b[0:2, 0:3, 0:3] = 3  # case b's truth has a spleen, case a's has none
    pred = gt_b.copy()
    pred[8:10, 9:12, 10:14] = 4  # pancreas: in no truth at all
    write(tmp_path / "gt" / "a.nii.gz", liver, g)
    write(tmp_path / "gt" / "b.nii.gz", gt_b, g)
    for case in ("a", "b"):
        write(tmp_path / "pred" / f"{case}.nii.gz", pred, g)
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "s.json")
    assert res.code == 0
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: ground truth")]
    assert len(notes) == 1
    assert "spleen (1 case), pancreas (2 cases, in no ground-truth case)" in notes[0]
    assert "--manifest" in notes[0]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["per_class"]["4"]["dsc"] == 0.0  # the official scores themselves are unchanged
    assert s["per_class"]["3"]["dsc"] == 0.5
    manifest = {"schema_version": 1, "cases": [{"id": "a", "organs": [1], "tumor": False},
                                               {"id": "b", "organs": [1, 3], "tumor": False}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--manifest",
                  tmp_path / "m.json")
    assert res.code == 0 and "note: ground truth" not in res.stderr
    res = run_cli("evaluate", tmp_path / "gt", tmp_path / "gt")  # a perfect prediction
    assert res.code == 0 and "note: ground truth" not in res.stderr
