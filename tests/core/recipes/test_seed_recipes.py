"""The four seed systems as built-in recipes: each trains every stage and infers on any grid,
applies its own preprocessing, builds the papers' network sizes; the rules the papers leave to
flare (the 002 partition, the left-right mirror) are checked against independent counts."""

import json

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.load import load_recipe
from tests.conftest import geom, write_case
from tests.core.inference.test_engine import GRIDS, scans

SEEDS = ("dual-decoder-2d", "fixed-size-c2f", "weak-label-efficientseg")
FIVE = {1, 2, 3, 4, 13}


def _params(recipe: str, stage: str) -> float:
    from flarecli.core.training.network import build_network

    model, _ = build_network(load_recipe(recipe, "paper").stages[stage])
    return sum(p.numel() for p in model.parameters()) / 1e6


# ---------------------------------------------------------------------------------------------
# end to end at tiny size
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SEEDS)
def test_every_stage_trains_and_infer_keeps_the_input_grid(name, tmp_path, run_cli):
    res = run_cli("demo", tmp_path / "d", "--recipe", name, "--preset", "smoke",
                  "--device", "cpu")
    assert res.code == 0, res.stderr
    run = tmp_path / "d" / "run"
    recipe = load_recipe(name, "smoke")
    trained = [s for s in recipe.pipeline.steps if isinstance(s, S.TrainStep)]
    assert trained
    for step in trained:
        folder = run / step.model / step.stage
        config = json.loads((folder / "config.json").read_text())
        metrics = (folder / "metrics.jsonl").read_text().splitlines()
        # every phase (a staged stage has four) ran its epoch of 2 steps
        assert [p["iterations"] for p in config["phases"]] == [2] * len(config["phases"])
        assert len(metrics) == len(config["phases"])
        assert (folder / "model.json").is_file() and (run / step.model / "recipe.json").is_file()
    scans(tmp_path / "in", np.random.default_rng(0))
    final = run / recipe.pipeline.final
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", final,
                  "--device", "cpu", "--tta")
    assert res.code == 0, res.stderr
    for case, g in GRIDS.items():
        label, g_out = read_volume(tmp_path / "out" / f"{case}.nii.gz")
        assert label.dtype == np.uint8 and g_out.mismatches(g) == []
        assert label.max() <= (13 if name == "fixed-size-c2f" else 14)  # FLARE22: no tumor
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["recipe"] == name
    graph = recipe.models[record["graph"]]
    # the recipe's post-processing is infer's default
    assert (record["postprocess"] is None) == (graph.postprocess is None)
    if name == "dual-decoder-2d":  # no post-processing in the paper; the flag still asks
        res = run_cli("infer", tmp_path / "in", tmp_path / "pp", "--model", final,
                      "--device", "cpu", "--postprocess")
        assert res.code == 0, res.stderr
        assert json.loads((tmp_path / "pp" / "infer.json").read_text())["postprocess"]
        _check_a_frozen_step(run, tmp_path / "frozen")


def _check_a_frozen_step(run, out):
    """Step 3 of the 2-D network trains the organ decoder only: every other parameter stays
    bit-identical to the weights it starts from."""
    import torch

    from flarecli.core.io.bundle import load_bundle
    from flarecli.core.training.options import TrainRun
    from flarecli.core.training.run import train

    step3 = {"name": "3-organ-decoder", "data": "D_l1", "train": ["branches.organs"],
             "heads": ["organs"], "epochs": 1, "iterations": 2, "lr": 0.01}
    recipe = load_recipe("dual-decoder-2d", "smoke", {"stages.unet2d.method.steps": [step3]})
    init = run / "student" / "unet2d"
    train(TrainRun(recipe, "unet2d", str(run / "corrected" / "manifest.json"), str(out),
                   device="cpu", workers=0, init=str(init)))
    before = load_bundle(init, "final")[0].state_dict()
    after = load_bundle(out / "unet2d", "final")[0].state_dict()
    organ_decoder = [k for k in before if k.startswith("branches.organs.")]
    assert organ_decoder and any(not torch.equal(before[k], after[k]) for k in organ_decoder)
    for k in before:
        if not k.startswith("branches.organs."):
            assert torch.equal(before[k], after[k]), k


# ---------------------------------------------------------------------------------------------
# each recipe's own preprocessing, on known arrays
# ---------------------------------------------------------------------------------------------

def _loaded(recipe: str, stage: str, overrides=None):
    from flarecli.core.inference.stages import LoadedStage
    from flarecli.core.preprocessing import intensity as I

    st = load_recipe(recipe, "paper", overrides).stages[stage]
    return LoadedStage(stage, None, {}, st, I.resolve(st.intensity), None,
                       st.network.args.get("dims", 3), "final")


def test_fixed_size_c2f_is_lpi_and_z_scored_per_image():
    from flarecli.core.inference.stages import prepare
    from flarecli.core.training.cache import preprocess_case

    shape = (6, 8, 10)  # an identity-direction (LPS) scan whose HU grow towards superior
    image = np.broadcast_to((np.arange(6) * 100.0 - 300)[:, None, None], shape).astype(np.int16)
    image = image + np.arange(10).astype(np.int16)[None, None, :]  # and towards the left
    ls = _loaded("fixed-size-c2f", "coarse", {"stages.coarse.geometry.size_zyx": list(shape)})
    assert ls.stage.orientation == "LPI"
    net_in, _, r = prepare(ls, image, ((0, 6), (0, 8), (0, 10)), (2.0, 1.0, 1.0), -1000.0)
    x = net_in
    # LPI: array axis 0 runs towards inferior (flipped), x still towards the left
    assert r.perm == (0, 1, 2) and r.flips == (True, False, False)
    expected = image[::-1].astype(np.float64)
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-5
    # training sees the same arrays (cached as float16)
    label = np.zeros(shape, np.uint8)
    label[2:4, 3:5, 4:6] = 1
    arrays = preprocess_case(image, label, geom(shape, spacing_xyz=(1.0, 1.0, 2.0)),
                             ls.intensity, ls.stage)
    np.testing.assert_allclose(arrays["image"].astype(np.float64), expected, atol=2e-3)
    np.testing.assert_array_equal(arrays["label"], label[::-1])


def test_weak_label_efficientseg_clips_to_325_hu():
    from flarecli.core.inference.stages import prepare

    hu = np.array([-1000, -325, -100, 0, 200, 325, 3000], np.float64)
    image = np.broadcast_to(hu[None, None, :], (2, 2, 7)).astype(np.int16)
    for stage in ("coarse", "fine", "teacher"):
        st = load_recipe("weak-label-efficientseg", "paper").stages[stage]
        expected = "foreground" if stage == "teacher" else "window"
        assert st.intensity.scheme == expected
    ls = _loaded("weak-label-efficientseg", "coarse",
                 {"stages.coarse.geometry.size_zyx": [2, 2, 7]})
    x = prepare(ls, image, ((0, 2), (0, 2), (0, 7)), (1.0, 1.0, 1.0), -1000.0)[0]
    np.testing.assert_allclose(x[0, 0], np.clip(hu, -325, 325) / 325, atol=1e-6)


def test_dual_decoder_windows_to_unit_range_and_infers_at_1_1_2_5_mm():
    from flarecli.core.inference.stages import grid_shape, prepare
    from flarecli.core.training.cache import preprocess_case

    hu = np.array([-500, -200, 50, 300, 900], np.float64)
    for stage in ("unet2d", "teacher-organs", "teacher-cancer"):
        ls = _loaded("dual-decoder-2d", stage)
        assert ls.stage.orientation == "RAS"
        assert ls.intensity.apply(hu.astype(np.float32)).tolist() == pytest.approx(
            (np.clip(hu, -200, 300) + 200) / 500)
    ls = _loaded("dual-decoder-2d", "unet2d")
    assert ls.dims == 2
    # inference: 1 x 1 x 2.5 mm whatever the scan's spacing; training keeps the slices
    assert grid_shape(ls, (40, 100, 120), (5.0, 0.8, 0.8)) == (80, 80, 96)
    assert grid_shape(ls, (300, 50, 50), (0.5, 2.0, 2.0)) == (60, 100, 100)
    image = np.zeros((10, 20, 30), np.int16)
    label = np.zeros(image.shape, np.uint8)
    label[3:6, 5:10, 5:15] = 1
    arrays = preprocess_case(image, label, geom(image.shape, spacing_xyz=(0.5, 0.5, 4.0)),
                             ls.intensity, ls.stage)
    assert arrays["image"].shape == (10, 10, 15)  # 4 mm slices kept, 1 mm in-plane
    # the RAS array order: x and y flipped relative to an identity-direction (LPS) scan
    net_in, _, r = prepare(ls, image, ((0, 10), (0, 20), (0, 30)), (4.0, 0.5, 0.5), -1000.0)
    assert r.flips == (False, True, True) and tuple(net_in.shape) == (16, 10, 15)


# ---------------------------------------------------------------------------------------------
# networks of the papers' sizes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("recipe", "stage", "paper_millions"), [
    ("dual-decoder-2d", "teacher-organs", 1.439),
    ("dual-decoder-2d", "teacher-cancer", 1.439),
    ("dual-decoder-2d", "unet2d", 2.388),
    ("fixed-size-c2f", "coarse", 41.22),
    ("fixed-size-c2f", "fine", 41.22),
    ("stmt", "organs", 6.66),
])
def test_paper_presets_build_the_papers_network_sizes(recipe, stage, paper_millions):
    assert abs(_params(recipe, stage) / paper_millions - 1) <= 0.10


def test_the_2d_network_has_2d_convolutions_and_an_organ_and_a_cancer_head():
    import torch

    from flarecli.core.training.network import build_network

    stage = load_recipe("dual-decoder-2d", "paper").stages["unet2d"]
    model, _ = build_network(stage)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert convs and all(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
                         for m in convs)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"organs": (1, 14, 32, 32),
                                                           "tumor": (1, 2, 32, 32)}
    # the last two up-sampling stages are each head's own, the rest is shared
    branches = {n.split(".")[1] for n, _ in model.named_parameters() if n.startswith("branches")}
    assert branches == {"organs", "tumor"} and len(model.branches["organs"].levels) == 2


def test_the_efficientseg_fine_network_is_anisotropic():
    import torch

    from flarecli.core.training.network import build_network

    model, _ = build_network(load_recipe("weak-label-efficientseg", "paper").stages["fine"])
    kernels = {tuple(m.kernel_size) for m in model.modules() if isinstance(m, torch.nn.Conv3d)}
    assert (1, 3, 3) in kernels and (3, 3, 3) in kernels
    assert model.strides[:2] == [(1, 2, 2), (1, 2, 2)] and model.divisor() == (4, 16, 16)


# ---------------------------------------------------------------------------------------------
# the 002 partition, against an independent count
# ---------------------------------------------------------------------------------------------

def _expected_groups(classes: set[int] | None) -> set[str]:
    """The issue's rule, written out independently of the recipe's subsets."""
    if classes is None:
        return {"D_u"}
    organs, tumor = classes - {14}, 14 in classes
    groups = set()
    if organs - FIVE:
        groups |= {"D_l1", "D_o13", "D_o5"} | ({"D_c"} if tumor else set())
    elif organs:
        groups |= {"D_l3", "D_c", "D_o5"} if tumor else {"D_l2", "D_o5"}
    elif tumor:
        groups |= {"D_l4", "D_c"}
    return groups


def _label_sets(folder) -> dict[str, set[int] | None]:
    import SimpleITK as sitk

    out: dict[str, set[int] | None] = {}
    for img in sorted((folder / "imagesTr").glob("*_0000.nii.gz")):
        case = img.name[:-len("_0000.nii.gz")]
        lab = folder / "labelsTr" / f"{case}.nii.gz"
        out[case] = ({int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(
            str(lab))))} - {0}) if lab.is_file() else None
    for img in sorted((folder / "imagesUn").glob("*_0000.nii.gz")):
        out[img.name[:-len("_0000.nii.gz")]] = None
    return out


@pytest.fixture(scope="module")
def partition_data(tmp_path_factory):
    from flarecli.cli import main

    synth = tmp_path_factory.mktemp("synth")
    try:
        main(["synth", str(synth), "--train", "30", "--unlabeled", "3", "--test", "1",
              "--size", "32", "--seed", "4"])
    except SystemExit as e:
        assert not e.code
    made = tmp_path_factory.mktemp("made")  # the corner cases synth rarely draws
    shape = (6, 6, 6)
    combos = {"five_all": [1, 2, 3, 4, 13], "five_some": [1, 13], "five_some_t": [3, 14],
              "tumor_only": [14], "other": [1, 6, 11], "other_t": [5, 14], "full_t":
              list(range(1, 15)), "empty": []}
    for case, labels in combos.items():
        label = np.zeros(shape, np.uint8)
        for i, c in enumerate(labels):
            label.flat[i * 3] = c
        write_case(made, case, label, geom(shape))
    write_case(made, "scan", None, geom(shape), images="imagesUn")
    return [synth, made]


def test_the_dual_decoder_partition_matches_an_independent_count(partition_data, run_cli,
                                                                 tmp_path):
    from flarecli.core.curation.subsets import cases_from_manifest, select
    from flarecli.core.recipes.load import BUILTIN_SUBSETS

    recipe = load_recipe("dual-decoder-2d")
    named = {**BUILTIN_SUBSETS, **recipe.subsets}
    names = ("D_u", "D_l1", "D_l2", "D_l3", "D_l4", "D_o13", "D_o5", "D_c")
    seen = set()
    for n, folder in enumerate(partition_data):
        res = run_cli("audit", folder, "--json", tmp_path / f"audit{n}.json")
        assert res.code in (0, 4), res.stderr  # an empty label is an error of its case
        cases, _, problems = cases_from_manifest(tmp_path / f"audit{n}.json")
        assert not problems
        chosen = {g: {c.id for c in select(cases, g, named)} for g in names}
        truth = {c: v for c, v in _label_sets(folder).items() if v is None or v}
        assert {c.id for c in cases} == set(truth)  # the empty label is left out
        for case, classes in truth.items():
            got = {g for g in names if case in chosen[g]}
            assert got == _expected_groups(classes), (case, classes)
            seen |= got
        # the five groups partition the cases
        assert sum(len(chosen[g]) for g in ("D_u", "D_l1", "D_l2", "D_l3", "D_l4")) == len(
            truth)
    assert seen == set(names)  # every group was exercised


def test_strong_weak_and_labelled_unlabelled_splits(partition_data, run_cli, tmp_path):
    from flarecli.core.curation.subsets import cases_from_manifest, select
    from flarecli.core.recipes.load import BUILTIN_SUBSETS

    res = run_cli("audit", partition_data[1], "--json", tmp_path / "a.json")
    assert res.code == 4 and "empty: label is empty" in res.stderr
    cases, _, _ = cases_from_manifest(tmp_path / "a.json")
    truth = _label_sets(partition_data[1])
    full = {c for c, v in truth.items() if v is not None and set(range(1, 14)) <= v}
    labelled = {c for c, v in truth.items() if v}
    for name, subsets in (("weak-label-efficientseg", ("strong", "weak")),
                          ("fixed-size-c2f", ("labelled", "unlabelled"))):
        recipe = load_recipe(name)
        named = {**BUILTIN_SUBSETS, **recipe.subsets}
        first, second = ({c.id for c in select(cases, s, named)} for s in subsets)
        assert first == full == {"full_t"}
        if name == "weak-label-efficientseg":  # unlabeled scans are not used
            assert second == labelled - full
        else:  # every scan without complete labels counts as unlabeled
            assert second == set(truth) - full - {"empty"}  # (the audit rejects 'empty')


# ---------------------------------------------------------------------------------------------
# the left-right mirror swaps the left/right pairs
# ---------------------------------------------------------------------------------------------

def test_a_left_right_flip_in_training_swaps_the_label_pairs():
    import torch

    from flarecli.core.labels import LR_SWAP
    from flarecli.core.training.data import make_sample
    from flarecli.core.training.feed import augment_config

    stage = load_recipe("weak-label-efficientseg", "paper", {
        "stages.fine.augmentation.mirror": ["LR"],
        "stages.fine.augmentation.settings": {"p_flip": 1.0},
        "stages.fine.geometry.size_zyx": [4, 4, 8]}).stages["fine"]
    config, swap = augment_config(stage)
    assert swap is not None and swap[0] == 2  # x runs left-right in LPS
    label = np.zeros((4, 4, 8), np.uint8)
    label[1, 1, :4] = [2, 7, 1, 14]  # patient's right (low x in LPS)
    label[1, 1, 4:] = [3, 5, 8, 13]  # left
    image = label.astype(np.float32) * 10
    arrays = {"image": image, "label": label, "roi": np.array([[0, 4], [0, 4], [0, 8]])}
    img, lab = make_sample(arrays, 0, stage.geometry, config, torch.device("cpu"),
                           swap_lr=swap)
    np.testing.assert_array_equal(img[0].numpy(), image[:, :, ::-1])
    np.testing.assert_array_equal(lab.numpy(), LR_SWAP[label[:, :, ::-1]])
    assert lab[1, 1].tolist() == [2, 7, 5, 3, 14, 1, 8, 13]
    assert {int(LR_SWAP[a]) for a in (2, 13, 7, 8)} == {13, 2, 8, 7}
    assert all(int(LR_SWAP[c]) == c for c in (0, 1, 3, 4, 5, 6, 9, 10, 11, 12, 14))


def test_left_right_tta_swaps_the_classes_back():
    """A network that names a kidney by its side: the mirrored view, flipped back and its
    classes swapped, agrees with the plain view voxel for voxel."""
    import torch

    from flarecli.core.inference.arrays import argmax_labels
    from flarecli.core.inference.stages import _lr_permutation, network_labels

    ls = _loaded("weak-label-efficientseg", "fine",
                 {"stages.fine.augmentation.mirror": ["LR"]})
    ids = [c for c in ls.stage.network.heads["labels"]]
    assert ids == list(range(1, 15))

    def by_side(x):  # kidney voxels on the left half (high x in LPS) are 13, else 2
        x = torch.as_tensor(x)  # the engine hands a backend NumPy batches
        kidney = x[:, 0] > 0.5
        left = torch.zeros_like(kidney)
        left[..., x.shape[-1] // 2:] = True
        cls = torch.where(kidney, torch.where(left, 13, 2), 0)
        return {"labels": torch.nn.functional.one_hot(cls, 15).movedim(-1, 1).float() * 10}

    class Backend:  # logits from by_side, and their argmax, like a real backend
        __call__ = staticmethod(by_side)

        @staticmethod
        def labels(x, sure=None):
            return {h: argmax_labels(v) for h, v in by_side(x).items()}

    ls.backend = Backend()
    x = np.zeros((4, 6, 10), np.float32)
    x[1:3, 2:4, 1:3] = 1  # right kidney
    x[1:3, 2:4, 6:9] = 1  # left kidney
    plain = network_labels(ls, x, tta=False)["labels"]
    assert set(np.unique(plain).tolist()) == {0, 2, 13}
    assert len(ls.views(True)) == 2
    np.testing.assert_array_equal(network_labels(ls, x, tta=True)["labels"], plain)
    perm = _lr_permutation(ls.stage, "labels")
    assert (perm[2], perm[13], perm[7], perm[8], perm[1], perm[14]) == (13, 2, 8, 7, 1, 14)


def test_only_the_cpu_preset_of_weak_label_efficientseg_adds_a_tumor_stage():
    """The paper keeps tumor a class of the fine network; at the cpu preset's 32 x 48 x 48 a
    lesion is a voxel or two, so that preset reads lesions at the scan's spacing in a stage of
    its own: stmt's cpu tumor stage trained supervised, overlaid as stmt overlays it."""
    from flarecli.core.recipes.typed import to_json

    paper = load_recipe("weak-label-efficientseg", "paper")
    assert "tumor" not in paper.stages
    assert [o.stage for o in paper.models["efficientseg"].outputs] == ["fine"]
    cpu = load_recipe("weak-label-efficientseg", "cpu")
    stmt = load_recipe("stmt", "cpu")

    def stage(recipe):
        return {k: v for k, v in to_json(recipe.stages["tumor"]).items()
                if k not in ("method", "description")}

    assert stage(cpu) == stage(stmt)
    assert cpu.stages["tumor"].method.TAG == "supervised"
    assert stmt.stages["tumor"].method.TAG == "mean_teacher"
    ours, theirs = cpu.models["efficientseg"], stmt.models["student"]
    assert to_json(ours.outputs[1]) == to_json(theirs.outputs[1])
    assert ours.postprocess.min_tumor_mm3 == theirs.postprocess.min_tumor_mm3
    # the preset restates the pipeline to add one step: the others stay the paper's
    steps = [to_json(st) for st in cpu.pipeline.steps]
    assert steps[:-1] == [to_json(st) for st in paper.pipeline.steps]
    assert steps[-1]["stage"] == "tumor" and steps[-1]["source"] == "supplemented"
