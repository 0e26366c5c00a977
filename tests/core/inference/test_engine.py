"""infer / pseudolabel on tiny bundles trained in the test: geometry, resume, failures,
TTA views, bundles from before recipes."""

import json
import math

import numpy as np
import pytest

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.io.outputs import WRITTEN
from flarecli.core.training.run import train
from tests.conftest import blob_case, geom, save_model_json, tiny_recipe, train_run


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    for i in range(3):
        blob_case(root / "data", f"b{i}", i, tumor=True)
    out = root / "model"
    for stage in ("coarse", "organs", "tumor"):
        # the organ model learns with augmentation, so it has mirror views for --tta
        augment = {"mirror": ["SI", "AP"]} if stage == "organs" else None
        train(train_run(root / "data", out, stage=stage,
                        recipe=tiny_recipe(epochs=1, iterations=2, augmentation=augment)))
    return out


def loaded(mirror, orientation="LPS", dims=3):
    """A LoadedStage as far as its TTA views go."""
    from flarecli.core.inference.stages import LoadedStage
    from flarecli.core.recipes import spec as S

    stage = tiny_recipe().stages["organs"]
    stage = S.Stage(**{**stage.__dict__, "orientation": orientation,
                       "augmentation": S.Augmentation(mirror=tuple(mirror)) if mirror is not
                       None else None})
    return LoadedStage("organs", None, {}, stage, None, None, dims, "final")


def test_tta_views_are_the_mirrors_the_model_was_trained_on():
    assert loaded(["SI", "AP"]).views(True) == [(), (0,), (1,), (0, 1)]
    assert loaded(["AP"]).views(True) == [(), (1,)]
    assert loaded([]).views(True) == [()]
    assert loaded(None).views(True) == [()]
    assert loaded(["SI", "AP"]).views(False) == [()]
    # another orientation puts the anatomy on other array axes
    assert loaded(["SI"], orientation="SLP").views(True) == [(), (2,)]
    # slices: flipping the slice axis adds nothing
    assert loaded(["SI", "AP"], dims=2).views(True) == [(), (1,)]


def test_tta_adds_nothing_to_a_model_trained_without_mirroring(model_dir, tmp_path, run_cli):
    import shutil

    meta = json.loads((model_dir / "organs" / "model.json").read_text())
    assert meta["stage"]["augmentation"]["mirror"] == ["SI", "AP"]  # never L-R in stmt
    plain = tmp_path / "model"
    shutil.copytree(model_dir, plain)
    meta["stage"]["augmentation"] = None
    save_model_json(plain / "organs" / "model.json", meta)
    scans(tmp_path / "in", np.random.default_rng(4))
    for name, extra in (("tta", ["--tta"]), ("plain", [])):
        res = run_cli("pseudolabel", tmp_path / "in", tmp_path / name, "--model", plain,
                      "--device", "cpu", *extra)
        assert res.code == 0, res.stderr
        assert ("trained without mirroring" in res.stderr) == bool(extra)
    written = sorted((tmp_path / "plain").glob("*.nii.gz"))
    assert len(written) == 4
    for path in written:
        np.testing.assert_array_equal(read_volume(path)[0],
                                      read_volume(tmp_path / "tta" / path.name)[0])
    rows = (tmp_path / "tta" / "scores.csv").read_text().splitlines()[1:]
    assert rows and all(row.split(",")[3] == "" for row in rows)  # no views to agree
    record = json.loads((tmp_path / "tta" / "pseudolabel.json").read_text())
    assert record["tta_views"] == {"organs": 1}


def test_an_output_that_asks_for_tta_has_it_without_the_option(model_dir, tmp_path, run_cli):
    """``tta`` on a graph's output: that stage averages its mirror views on every run, just as
    ``--tta`` makes it, and the run record says so; other stages are left alone."""
    import shutil

    asks = tmp_path / "model"
    shutil.copytree(model_dir, asks)
    recipe = json.loads((asks / "recipe.json").read_text())
    graph = recipe["models"]["student"]
    assert graph["outputs"][0]["stage"] == "organs"  # trained with the SI and AP mirrors
    graph["outputs"][0]["tta"] = True
    (asks / "recipe.json").write_text(json.dumps(recipe))
    scans(tmp_path / "in", np.random.default_rng(5))
    for name, model, extra in (("asks", asks, []), ("option", model_dir, ["--tta"]),
                               ("plain", model_dir, [])):
        res = run_cli("pseudolabel", tmp_path / "in", tmp_path / name, "--model", model,
                      "--device", "cpu", *extra)
        assert res.code == 0, res.stderr
    views = {name: json.loads((tmp_path / name / "pseudolabel.json").read_text())["tta_views"]
             for name in ("asks", "option", "plain")}
    assert views["asks"] == views["option"] == {"organs": 4}
    assert views["plain"] == {"organs": 1}
    for path in sorted((tmp_path / "option").glob("*.nii.gz")):
        np.testing.assert_array_equal(read_volume(path)[0],
                                      read_volume(tmp_path / "asks" / path.name)[0])
    # the views' agreement is scored only where there are views
    for name, agreement in (("asks", True), ("option", True), ("plain", False)):
        rows = (tmp_path / name / "scores.csv").read_text().splitlines()[1:]
        assert len(rows) == 4 and all((row.split(",")[3] != "") == agreement for row in rows)


def test_mirror_axes_are_checked(model_dir, tmp_path):
    import shutil

    from flarecli.core.errors import ModelError
    from flarecli.core.inference.engine import Engine
    from flarecli.core.runtime import resolve_device

    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "organs" / "model.json").read_text())
    for mirror in (["SI", "SI"], ["XY"], "SI"):  # repeated, unknown, not a list
        meta["stage"]["augmentation"] = {"mirror": mirror}
        save_model_json(bad / "organs" / "model.json", meta)
        with pytest.raises(ModelError, match="mirror"):
            Engine(bad, resolve_device("cpu"))


def oblique(deg):
    a = math.radians(deg)
    return (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)


GRIDS = {
    "identity": geom((20, 30, 28), spacing_xyz=(1.5, 1.5, 2.0)),
    "flipped": geom((17, 26, 31), spacing_xyz=(0.7, 0.9, 4.0),
                    direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1), origin=(100.0, 80.0, -300.0)),
    "oblique": Geometry((21, 25, 29), (1.2, 0.8, 3.0), (5.0, -7.5, 12.0), oblique(30)),
    "z-down": geom((9, 40, 40), spacing_xyz=(0.8, 0.8, 5.0), direction=(1, 0, 0, 0, 1, 0, 0, 0,
                                                                          -1)),
}


def scans(folder, rng):
    for name, g in GRIDS.items():
        image = rng.normal(0, 200, g.shape_zyx).astype(np.int16)
        write_volume(folder / f"{name}_0000.nii.gz", image, g)


def test_infer_keeps_every_input_grid_and_resumes(model_dir, tmp_path, run_cli):
    scans(tmp_path / "in", np.random.default_rng(0))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu", "--profile", tmp_path / "p.json")
    assert res.code == 0, res.stderr
    for name, g in GRIDS.items():
        label, g_out = read_volume(tmp_path / "out" / f"{name}.nii.gz")
        assert label.dtype == np.uint8 and g_out.shape_zyx == g.shape_zyx
        assert g_out.mismatches(g) == []
        assert label.max() <= 14
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert set(record["model_sha256"]) == {"coarse", "organs", "tumor"}
    assert record["recipe"] == "stmt" and record["graph"] == "student"
    profile = json.loads((tmp_path / "p.json").read_text())
    scan = profile["scans"][0]
    for key in ("read", "compute", "write", "total", "coarse", "fine"):
        assert scan["seconds"][key] >= 0
    assert scan["seconds"]["total"] >= scan["seconds"]["compute"]
    assert {"gpu_peak_mb", "gpu_max_used_mb", "gpu_area_mb_s"} <= set(scan)
    # every step of the computation, a sampled RSS peak and the CPU area (FLARE22)
    assert {"crop", "normalise", "resample to network", "network coarse",
            "network organs", "resample to the scan", "paste"} <= set(scan["steps"])
    assert sum(scan["steps"].values()) <= scan["seconds"]["compute"] + 1e-3
    assert scan["peak_rss_mb"] > 50 and scan["cpu_area_pct_s"] > 0
    assert profile["summary"]["max_scan_rss_mb"] > 50
    assert set(profile["backends"]) == {"coarse", "organs", "tumor"}
    assert profile["summary"]["scans"] == 4 and profile["summary"]["peak_rss_mb"] > 0
    # resume: nothing redone; --overwrite redoes
    out_file = tmp_path / "out" / "flipped.nii.gz"
    mtime = out_file.stat().st_mtime_ns
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu")
    assert "skipped 4 existing" in res.stdout and out_file.stat().st_mtime_ns == mtime
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu", "--overwrite")
    assert res.code == 0 and out_file.stat().st_mtime_ns != mtime


def test_infer_bad_scans_are_reported_and_the_rest_written(model_dir, tmp_path, run_cli):
    import SimpleITK as sitk

    scans(tmp_path / "in", np.random.default_rng(1))
    sitk.WriteImage(sitk.Image(12, 10, sitk.sitkInt16), str(tmp_path / "in" / "flat_0000.nii.gz"))
    good = (tmp_path / "in" / "identity_0000.nii.gz").read_bytes()
    (tmp_path / "in" / "cut_0000.nii.gz").write_bytes(good[: len(good) // 2])
    from tests.core.curation.test_audit import write_nan_image

    write_nan_image(tmp_path / "in" / "nan_0000.nii.gz", (16, 16, 16))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu")
    assert res.code == 4
    assert "error: flat: " in res.stderr and "2-D, expected 3-D" in res.stderr
    assert "error: cut: " in res.stderr
    assert "error: nan: " in res.stderr and "NaN/inf voxels" in res.stderr
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 4
    # no temporary files left; the ledger lists what was written
    assert [p.name for p in (tmp_path / "out").glob(".*")] == [WRITTEN]
    res = run_cli("infer", tmp_path / "in", tmp_path / "in", "--model", model_dir)
    assert res.code == 3 and "output folder is the input folder" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_cli("infer", tmp_path / "in", tmp_path / "o2", "--model", tmp_path / "empty")
    assert res.code == 5 and "holds no complete model of recipe 'stmt'" in res.stderr


def test_interrupted_write_leaves_no_partial_file(model_dir, tmp_path, monkeypatch):
    import SimpleITK as sitk

    from flarecli.core.inference import folder as predict_run
    from flarecli.core.inference.engine import Engine
    from flarecli.core.io.cases import discover_cases
    from flarecli.core.runtime import resolve_device

    scans(tmp_path / "in", np.random.default_rng(2))
    real_write = sitk.WriteImage

    def dying_write(image, path, *args, **kw):
        real_write(image, path, *args, **kw)  # the temporary file is complete on disk...
        raise KeyboardInterrupt  # ...but the process dies before the rename

    monkeypatch.setattr(sitk, "WriteImage", dying_write)
    engine = Engine(model_dir, resolve_device("cpu"))
    cases = discover_cases(tmp_path / "in").cases
    with pytest.raises(KeyboardInterrupt):
        plan = predict_run.plan_outputs(cases, tmp_path / "out", "nifti", False)
        list(predict_run.run_folder(engine, plan, tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == [WRITTEN]  # no output, no part


def test_pseudolabel_scores_and_min_score(model_dir, tmp_path, run_cli):
    scans(tmp_path / "in", np.random.default_rng(3))
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model_dir,
                  "--device", "cpu", "--tta")
    assert res.code == 0, res.stderr
    rows = (tmp_path / "pl" / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("case,score,confidence,agreement,written,volume_ml_1")
    assert len(rows) == 5
    for row in rows[1:]:
        cells = row.split(",")
        score, confidence, agreement = (float(v) for v in cells[1:4])
        assert 0 < confidence <= 1 and 0 <= agreement <= 1
        assert score == pytest.approx(confidence * agreement, abs=2e-4)
    labels = [read_volume(p)[0] for p in (tmp_path / "pl").glob("*.nii.gz")]
    assert len(labels) == 4 and all(lab.max() <= 13 for lab in labels)  # no tumor by default
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl2", "--model", model_dir,
                  "--device", "cpu", "--min-score", "0.9999")
    assert res.code == 0 and "4 below --min-score" in res.stdout
    assert list((tmp_path / "pl2").glob("*.nii.gz")) == []
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl3", "--model", model_dir,
                  "--min-score", "2")
    assert res.code == 3


def test_infer_on_the_real_ct(model_dir, tmp_path, run_cli, shared_ct):
    import shutil

    image, _ = shared_ct
    (tmp_path / "in").mkdir()
    shutil.copy(image, tmp_path / "in" / image.name)
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", model_dir,
                  "--device", "cpu")
    assert res.code == 0, res.stderr
    _, g_in = read_volume(image)
    label, g_out = read_volume(tmp_path / "out" / "ts_example.nii.gz")
    assert g_out.mismatches(g_in) == [] and label.dtype == np.uint8


def test_same_anatomy_in_another_storage_gets_the_same_labels(model_dir):
    """An LPS- and a RAS-stored copy of one scan: identical labels in physical space."""
    from flarecli.core.inference.engine import Engine
    from flarecli.core.runtime import resolve_device

    engine = Engine(model_dir, resolve_device("cpu"))
    rng = np.random.default_rng(5)
    image = rng.normal(0, 200, (20, 30, 28)).astype(np.int16)
    lps = geom(image.shape, spacing_xyz=(1.5, 1.2, 2.0))
    ras = geom(image.shape, spacing_xyz=(1.5, 1.2, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    a = engine.predict(image, lps).label
    b = engine.predict(np.ascontiguousarray(image[:, ::-1, ::-1]), ras).label
    assert np.array_equal(b, a[:, ::-1, ::-1])


LEGACY = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "legacy-bundles"


def test_a_model_folder_from_before_recipes_loads_as_stmt(tmp_path, run_cli):
    from flarecli.core.inference.engine import Engine
    from flarecli.core.runtime import resolve_device

    engine = Engine(LEGACY / "model", resolve_device("cpu"))
    assert engine.recipe.name == "stmt" and engine.graph_name == "student"
    assert engine.outputs == [("organs", "organs"), ("tumor", "tumor")]
    assert len(engine.stages["organs"].views(True)) == 4  # trained with S-I and A-P mirrors
    image, g = read_volume(LEGACY / "b0_0000.nii.gz")
    expected, _ = read_volume(LEGACY / "b0_expected.nii.gz")
    np.testing.assert_array_equal(engine.predict(image, g).label, expected)
    import shutil

    (tmp_path / "in").mkdir()
    shutil.copy(LEGACY / "b0_0000.nii.gz", tmp_path / "in")
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", LEGACY / "model",
                  "--device", "cpu", "--no-postprocess", "--backend", "torch")
    assert res.code == 0, res.stderr
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "b0.nii.gz")[0], expected)
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["recipe"] == "stmt" and record["postprocess"] is None


def test_the_run_record_names_the_weights_that_ran(model_dir, tmp_path, run_cli):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    # give the organ bundle two different weights files, 'best' being the default
    meta = json.loads((folder / "organs" / "model.json").read_text())
    from flarecli.core.io.bundle import sha256

    shutil.copy(folder / "tumor" / "weights_final.pt", folder / "organs" / "weights_best.pt")
    meta["weights"]["best"] = {"file": "weights_best.pt",
                               "sha256": sha256(folder / "organs" / "weights_best.pt")}
    meta["default_weights"] = "best"
    save_model_json(folder / "organs" / "model.json", meta)
    scans(tmp_path / "in", np.random.default_rng(6))
    for which in ("final", "best"):
        res = run_cli("infer", tmp_path / "in", tmp_path / which, "--model", folder,
                      "--device", "cpu", "--weights", which)
        # the tumor weights do not fit the organ network: 'best' is refused, naming the file
        if which == "best":
            assert res.code == 5 and "weights_best.pt" in res.stderr
            continue
        assert res.code == 0, res.stderr
        record = json.loads((tmp_path / which / "infer.json").read_text())
        assert record["stages"]["organs"] == {"sha256": meta["weights"]["final"]["sha256"],
                                              "weights": "final"}
        assert record["model_sha256"]["organs"] == meta["weights"]["final"]["sha256"]


def test_a_case_rejected_on_a_rerun_loses_its_old_pseudo_label(model_dir, tmp_path, run_cli):
    scans(tmp_path / "in", np.random.default_rng(7))
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model_dir,
                  "--device", "cpu")
    assert res.code == 0 and len(list((tmp_path / "pl").glob("*.nii.gz"))) == 4
    kept = {p.name: p.read_bytes() for p in (tmp_path / "pl").glob("*.nii.gz")}
    scores = [float(r.split(",")[1]) for r in
              (tmp_path / "pl" / "scores.csv").read_text().splitlines()[1:]]
    between = (sorted(scores)[1] + sorted(scores)[2]) / 2  # two fall short, two reach it
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model_dir,
                  "--device", "cpu", "--min-score", f"{between}")  # a resumed run, no --overwrite
    assert res.code == 0 and "2 below --min-score" in res.stdout, res.stdout
    assert res.stderr.count("is under --min-score; computed again") == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "pl").glob("*.nii.gz")} == {
        k: v for k, v in kept.items() if k in {p.name for p in (tmp_path / "pl").iterdir()}}
    assert len(list((tmp_path / "pl").glob("*.nii.gz"))) == 2
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model_dir,
                  "--device", "cpu", "--min-score", "0.9999", "--overwrite")
    assert res.code == 0 and "4 below --min-score" in res.stdout
    assert list((tmp_path / "pl").glob("*.nii.gz")) == []  # no stale pseudo-label left
    rows = (tmp_path / "pl" / "scores.csv").read_text().splitlines()[1:]
    assert [r.split(",")[4] for r in rows] == ["0"] * 4
    # correct then finds no pseudo-label for these cases instead of using a stale one
    from flarecli.core.io.nifti import write_volume

    for name, g in GRIDS.items():
        write_volume(tmp_path / "labels" / f"{name}.nii.gz", np.zeros(g.shape_zyx, np.uint8)
                     + (np.arange(g.shape_zyx[2]) < 3).astype(np.uint8), g)
    res = run_cli("correct", tmp_path / "pl", tmp_path / "labels", tmp_path / "fixed",
                  "--images", tmp_path / "in")
    assert res.code == 4 and "without a pseudo-label" in res.stderr


def test_outputs_are_cleaned_before_they_are_merged(model_dir, monkeypatch):
    """A tumor band across the liver must not make post-processing drop half of the liver:
    each output keeps its largest components before the tumor is overlaid."""
    from flarecli.core.inference import stages as ST
    from flarecli.core.inference.engine import Engine
    from flarecli.core.recipes.spec import Postprocess
    from flarecli.core.runtime import resolve_device

    engine = Engine(model_dir, resolve_device("cpu"))
    shape = (12, 20, 20)
    organs = np.zeros(shape, np.uint8)
    organs[2:10, 2:18, 2:18] = 1  # the liver (network class 1 = FLARE id 1)
    organs[0, 0, 0] = 1  # a speck of liver: not its largest component
    tumor = np.zeros(shape, np.uint8)
    tumor[:, 9:11, :] = 1  # a tumor band cutting the liver in two

    def fake_segment(ls, image, box, spacing, fill, tta, stats=None, memo=None, sure=None):
        head = next(iter(ls.stage.network.heads))
        found = {head: tumor if head == "tumor" else organs}
        # the tumor head is sure of every label it gives (the merge rule paints the band)
        return found | {h + ST.SURE: found[h] for h in (sure or {}) if h in found}

    monkeypatch.setattr(ST, "segment", fake_segment)
    monkeypatch.setattr(Engine, "roi", lambda self, image, spacing, fill: tuple(
        (0, s) for s in image.shape))
    monkeypatch.setattr(Engine, "region", lambda self, ls, roi, shape_, spacing: roi)
    label = engine.predict(np.zeros(shape, np.int16), geom(shape),
                           postprocess=Postprocess()).label
    assert label[0, 0, 0] == 0  # the speck is gone
    assert (label[2:10, 2:9, 2:18] == 1).all() and (label[2:10, 11:18, 2:18] == 1).all()
    assert (label[:, 9:11, :] == 14).all()


def test_merge_rule_keeps_an_unsure_head_off_earlier_labels():
    """Tumor over organs: only near a host organ, over an organ voxel only where the head is
    sure, and in unlabelled voxels by the argmax where the component holds a sure voxel."""
    from flarecli.core.inference.engine import merged_over
    from flarecli.core.recipes import spec as S

    earlier = np.zeros((4, 10, 30), np.uint8)
    earlier[:, :, :10] = 1  # liver (a host)
    earlier[:, :, 10:12] = 9  # gallbladder beside it (not a host)
    earlier[:, :, 20:25] = 3  # spleen (not a host)
    ids = np.zeros_like(earlier)
    ids[:, 4:6, 5:30] = 14  # the head says tumor along a line through everything
    sure = np.zeros_like(earlier)
    sure[:, 4:6, 5:8] = 14  # ... and is sure of it only here
    sure[:, 4:6, 10:12] = 14  # and in the gallbladder
    ids[:, 1, 12:20] = 14  # a second lesion, beside the liver in unlabelled voxels ...
    sure[:, 1, 12] = 14  # ... sure of one voxel column
    rule = S.Output("tumor", hosts=(1,), host_margin_mm=4.0, replace_probability=0.8)
    out = merged_over(ids, earlier, rule, (1.0, 1.0, 1.0), sure)
    row = out[0, 4]
    # sure in the liver; never over the gallbladder (a class that is no host, however sure)
    # nor the spleen; the unlabelled voxels beyond the gallbladder hold no sure voxel
    assert set(np.flatnonzero(row == 14)) == {5, 6, 7}
    # the unlabelled voxels within 4 mm of the liver take the argmax beside a sure one
    assert set(np.flatnonzero(out[0, 1] == 14)) == {12, 13}
    assert out.dtype == np.uint8
    loose = merged_over(ids, earlier, S.Output("tumor"), (1.0, 1.0, 1.0), None)
    assert (loose == ids).all()  # no rule: the argmax everywhere


def test_a_sure_tumor_head_takes_host_voxels_however_sure_the_organ_stage_was(
        model_dir, monkeypatch):
    """End to end through Engine.predict: only the tumor head is asked for sure labels (at
    its rule's probability); the organ stage's certainty plays no part (at the cpu preset's
    coarse grid it is sure of its organ across every lesion), so a sure lesion band takes
    the liver voxels and the unlabelled ones beside them, and a lukewarm one takes none."""
    from flarecli.core.inference import stages as ST
    from flarecli.core.inference.engine import Engine
    from flarecli.core.runtime import resolve_device

    engine = Engine(model_dir, resolve_device("cpu"))
    rule = engine.merge[engine.outputs[-1]]
    assert rule.replace_probability > 0.5
    organ_key, tumor_key = engine.outputs[0], engine.outputs[-1]
    assert engine.sure_at == {tumor_key: rule.replace_probability}
    shape = (6, 10, 20)
    organs = np.zeros(shape, np.uint8)
    organs[:, :, :16] = 1  # liver on the left, nothing on the right
    tumor = np.zeros(shape, np.uint8)
    tumor[:, 4:6, 4:18] = 1  # a lesion band, sure throughout ...
    tumor[:, 1:3, 4:18] = 1  # ... and one the head is lukewarm about
    tumor_sure = tumor.copy()
    tumor_sure[:, 1:3] = 0
    asked = {}

    def fake_segment(ls, image, box, spacing, fill, tta, stats=None, memo=None, sure=None):
        head = next(iter(ls.stage.network.heads))
        asked[head] = dict(sure or {})
        if head == "tumor":
            return {head: tumor, head + ST.SURE: tumor_sure}
        return {head: organs, head + ST.SURE: organs}  # sure of every organ voxel

    monkeypatch.setattr(ST, "segment", fake_segment)
    monkeypatch.setattr(Engine, "roi", lambda self, image, spacing, fill: tuple(
        (0, s) for s in image.shape))
    monkeypatch.setattr(Engine, "region", lambda self, ls, roi, shape_, spacing: roi)
    label = engine.predict(np.zeros(shape, np.int16), geom(shape)).label
    assert asked[organ_key[1]] == {}
    assert asked[tumor_key[1]] == {tumor_key[1]: rule.replace_probability}
    assert (label[:, 4:6, 4:18] == 14).all()  # liver and the unlabelled voxels beside it
    assert (label[:, 1:3, :16] == 1).all()  # the lukewarm band leaves the liver alone
    assert (label[:, 1:3, 16:] == 0).all()  # and holds no sure voxel to grow from


def test_merge_rule_is_checked_in_the_recipe():
    import pytest

    from flarecli.core.recipes import spec as S

    with pytest.raises(ValueError, match="replace_probability"):
        S.Output("tumor", replace_probability=0.3)
    with pytest.raises(ValueError, match="host_margin_mm"):
        S.Output("tumor", host_margin_mm=-1)
    with pytest.raises(ValueError, match="not a FLARE class"):
        S.Output("tumor", hosts=(99,))
