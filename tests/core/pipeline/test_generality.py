"""Recipes written here, not the built-ins, run end to end through the one engine: every
stage trains, then ``flare infer`` labels scans of any grid with labels on that grid."""

import json

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume
from flarecli.core.pipeline.runner import PipelineRun, run_pipeline
from flarecli.core.recipes.load import load_recipe
from tests.conftest import blob_case
from tests.core.inference.test_engine import GRIDS, scans

TINY = {"base_channels": 4, "n_down": 2, "blocks_down": 1, "blocks_up": 1}
SHORT = {"epochs": 2, "iterations": 3, "batch_size": 2, "val_fraction": 0.0,
         "optimizer": {"name": "adamw", "lr": 0.003, "warmup_epochs": 0}}


def stage(role="segment", heads=None, region="whole", **fields):
    return {"role": role, "network": {"arch": "resunet", "args": dict(TINY),
                                      "heads": heads or {"organs": [1, 3, 13]}},
            "geometry": {"region": region, "size_zyx": [16, 16, 16]}, **SHORT, **fields}


def recipe(tmp_path, stages, outputs, roi=None, name="custom"):
    steps = [{"kind": "train", "name": f"train-{s}", "stage": s, "model": "m",
              "source": "dataset"} for s in stages]
    data = {"schema_version": 1, "name": name, "title": "a recipe written by a test",
            "stages": stages, "models": {"m": {"roi": roi, "outputs": outputs}},
            "pipeline": {"final": "m", "steps": steps}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i in range(3):
        blob_case(root, f"b{i}", i, tumor=True)
    return root


def run_end_to_end(tmp_path, dataset, recipe_path, run_cli):
    result = run_pipeline(PipelineRun(load_recipe(recipe_path), dataset, tmp_path / "run",
                                      device="cpu", workers=1))
    scans(tmp_path / "in", np.random.default_rng(0))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", result.final,
                  "--device", "cpu", "--tta")
    assert res.code == 0, res.stderr
    for name, g in GRIDS.items():
        label, g_out = read_volume(tmp_path / "out" / f"{name}.nii.gz")
        assert label.dtype == np.uint8 and g_out.mismatches(g) == []
        assert label.max() <= 14
    return json.loads((tmp_path / "out" / "infer.json").read_text()), result


def test_a_recipe_without_a_roi_stage(tmp_path, dataset, run_cli):
    path = recipe(tmp_path, {"whole": stage(intensity={"scheme": "zscore_image"},
                                            orientation="RAS")},
                  [{"stage": "whole"}])
    record, _ = run_end_to_end(tmp_path, dataset, path, run_cli)
    assert record["graph"] == "m" and set(record["stages"]) == {"whole"}


def test_a_recipe_with_three_stages(tmp_path, dataset, run_cli):
    stages = {
        "locate": stage(role="roi", heads={"body": [[1, 3, 13, 14]]},
                        intensity={"scheme": "window", "hu": [-200, 300], "to": [0, 1]}),
        "organs": stage(region="roi", geometry={"region": "roi", "size_zyx": [16, 16, 16],
                                                "margin_mm": 5.0, "pad": "aspect"},
                        orientation="LPI", augmentation={"mirror": ["AP"]}),
        "lesions": stage(region="roi", heads={"tumor": [14]},
                         method={"name": "mean_teacher", "ema_decay": 0.9},
                         geometry={"region": "roi", "size_zyx": [16, 16, 16]}),
    }
    path = recipe(tmp_path, stages, [{"stage": "organs"}, {"stage": "lesions"}],
                  roi={"stage": "locate", "min_fraction": 0.1})
    record, _ = run_end_to_end(tmp_path, dataset, path, run_cli)
    assert set(record["stages"]) == {"locate", "organs", "lesions"}
    assert record["tta_views"] == {"organs": 2, "lesions": 1}


def test_a_two_head_network(tmp_path, dataset, run_cli):
    two = stage(heads={"organs": [1, 3, 13], "tumor": [14]})
    two["network"]["args"]["split_levels"] = 1
    path = recipe(tmp_path, {"dual": two}, [{"stage": "dual", "head": "organs"},
                                            {"stage": "dual", "head": "tumor"}])
    record, _ = run_end_to_end(tmp_path, dataset, path, run_cli)
    assert record["with_tumor"] is True and set(record["stages"]) == {"dual"}


def test_a_patch_stage_runs_by_sliding_window(tmp_path, dataset, run_cli):
    patchy = stage(geometry={"region": "whole", "spacing_zyx": [2.0, 2.0, 2.0],
                             "patch_zyx": [8, 16, 16], "overlap": 0.5},
                   augmentation={"mirror": ["SI", "AP", "LR"]})
    path = recipe(tmp_path, {"patches": patchy}, [{"stage": "patches"}])
    record, _ = run_end_to_end(tmp_path, dataset, path, run_cli)
    assert record["tta_views"] == {"patches": 8}


def test_a_2d_network_runs_slice_by_slice(tmp_path, dataset, run_cli):
    slices = stage(heads={"organs": [1, 3, 13], "tumor": [14]},
                   geometry={"region": "whole", "spacing_zyx": [None, 2.0, 2.0],
                             "infer_spacing_zyx": [4.0, 2.0, 2.0], "patch_zyx": [1, 16, 16]},
                   augmentation={"mirror": ["AP"], "rotation_about": ["SI"]})
    slices["network"]["args"].update(dims=2, split_levels=2, block="plain")
    path = recipe(tmp_path, {"slices": slices}, [{"stage": "slices", "head": "organs"},
                                                {"stage": "slices", "head": "tumor"}])
    record, result = run_end_to_end(tmp_path, dataset, path, run_cli)
    meta = json.loads((result.final / "slices" / "model.json").read_text())
    assert meta["architecture"]["args"]["dims"] == 2
    from flarecli.core.io.bundle import load_bundle

    model, _ = load_bundle(result.final / "slices")
    import torch

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)]
    assert convs and all(isinstance(m, torch.nn.Conv2d) for m in convs)
    assert record["tta_views"] == {"slices": 2}


def _train(tmp_path, dataset, path):
    return run_pipeline(PipelineRun(load_recipe(path), dataset, tmp_path / "run", device="cpu",
                                    workers=1)).final


def test_without_tumor_a_head_of_organs_and_tumor_still_labels_its_organs(
        tmp_path, dataset, run_cli, monkeypatch):
    """A 14-class network (weak-label-efficientseg's fine stage) pseudo-labels organs without
    --with-tumor: its tumor voxels are left unlabelled, its organs kept, in its labels and in
    its sure labels alike. Before, the whole output was left out and every pseudo-label came
    out empty. A lesion head overlaid on it (weak-label-efficientseg's cpu preset) is not even
    loaded then."""
    from flarecli.core.inference import stages as ST

    lesion_head = {"tumor": [[1, 13], 14]}  # host tissue against lesion, as the presets ship
    path = recipe(tmp_path, {"all": stage(heads={"labels": [1, 3, 13, 14]}),
                             "lesions": stage(heads=lesion_head)},
                  [{"stage": "all"}, {"stage": "lesions", "head": "tumor", "hosts": [1, 13],
                                      "host_margin_mm": 5.0, "replace_probability": 0.6}])
    data = json.loads(path.read_text())
    data["models"]["m"]["postprocess"] = {"min_tumor_mm3": 0.0}  # keep the 8-voxel lesion
    path.write_text(json.dumps(data))
    model = _train(tmp_path, dataset, path)

    ran = set()

    def fake_segment(ls, image, box, spacing, fill, tta, stats=None, memo=None, sure=None):
        ran.add(ls.name)
        shape = tuple(b - a for a, b in box)
        labels = np.zeros(shape, np.uint8)
        if ls.name == "lesions":  # sure of nothing: it may not replace a voxel of the liver
            labels[2:4, 2:4, 2:4] = 2
            return {"tumor": labels, "tumor" + ST.SURE: np.zeros_like(labels)}
        labels[1:-1, 1:-1, 1:-1] = 1  # liver (head class 1)
        labels[2:4, 2:4, 2:4] = 4  # a lesion in it (head class 4 = FLARE 14)
        if stats is not None:
            stats["confidence"] = 0.9
        return {"labels": labels} | {h + ST.SURE: labels for h in (sure or {})}

    monkeypatch.setattr(ST, "segment", fake_segment)
    scans(tmp_path / "in", np.random.default_rng(0))
    from flarecli.core.inference.engine import Engine
    from flarecli.core.runtime import resolve_device

    assert set(Engine(model, resolve_device("cpu"), with_tumor=False).stages) == {"all"}
    for args, lesion in (((), 0), (("--with-tumor",), 14)):
        out = tmp_path / f"pl{len(args)}"
        ran.clear()
        res = run_cli("pseudolabel", tmp_path / "in", out, "--model", model, *args)
        assert res.code == 0, res.stderr
        assert ran == ({"all", "lesions"} if lesion else {"all"})
        assert json.loads((out / "pseudolabel.json").read_text())["with_tumor"] is bool(lesion)
        for name in GRIDS:
            label, _ = read_volume(out / f"{name}.nii.gz")
            assert set(np.unique(label)) == {0, 1} | ({lesion} - {0})
            assert (label == 1).sum() == (np.array(label.shape) - 2).prod() - 8
            assert (label == 14).sum() == (8 if lesion else 0)


@pytest.mark.parametrize("classes", [[14], [[1, 13], 14]])
def test_without_tumor_a_model_of_tumor_only_is_refused(classes, tmp_path, dataset, run_cli):
    model = _train(tmp_path, dataset,
                   recipe(tmp_path, {"lesions": stage(heads={"tumor": classes})},
                          [{"stage": "lesions"}]))
    scans(tmp_path / "in", np.random.default_rng(0))
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", model)
    assert res.code == 5 and "labels only tumor (lesions)" in res.stderr
    assert "Traceback" not in res.stderr and not list((tmp_path / "pl").glob("*.nii.gz"))
