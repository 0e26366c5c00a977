"""flare train on tiny recipes (CPU): learning, resume, bundles, methods, staged freezing, DDP."""

import json

import numpy as np
import pytest
import torch

from flarecli.core.errors import InputError, ModelError
from flarecli.core.io.bundle import load_bundle
from flarecli.core.recipes.typed import RecipeError
from flarecli.core.training.options import Progress
from flarecli.core.training.run import train
from tests.conftest import blob_case, save_model_json, tiny_recipe, train_run


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    for i in range(3):
        blob_case(root, f"b{i}", i, tumor=i != 1)
    return root


def predict(model, stage, case_path):
    from flarecli.core.training import data as D
    from flarecli.core.training.cache import load_cached

    image, label = D.make_sample(load_cached(case_path), 0, stage.geometry, None, "cpu",
                                 train=False)
    with torch.no_grad():
        pred = model(image[None])
    pred = (next(iter(pred.values())) if isinstance(pred, dict) else pred).argmax(1)[0]
    return pred, label


def test_overfits_one_case_and_loss_goes_down(tmp_path):
    blob_case(tmp_path / "one", "solo", 0)
    recipe = tiny_recipe(epochs=8, iterations=25, batch_size=1, optimizer__lr=1e-2,
                         geometry__jitter=0.0)
    result = train(train_run(tmp_path / "one", tmp_path / "m", recipe=recipe))
    run = tmp_path / "m" / "organs"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 8 and metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    model, meta = load_bundle(run, "final")
    assert meta["schema"] == 2 and meta["stage_name"] == "organs"
    assert meta["stage"]["epochs"] == 8 and meta["intensity"]["mode"] == "foreground"
    assert meta["stage"]["network"]["heads"] == {"organs": list(range(1, 14))}
    cached = next((tmp_path / "m" / "cache").glob("solo-*.npz"))
    pred, label = predict(model, recipe.stages["organs"], cached)
    for c in (1, 3, 13):
        g, p = label == c, pred == c
        assert 2 * (g & p).sum() / (g.sum() + p.sum()) > 0.9, c
    assert result["epochs"] == 8
    # the model folder carries the resolved recipe
    saved = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert saved["name"] == "stmt" and "student" in saved["models"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(blobs, tmp_path):
    recipe = tiny_recipe(epochs=3, augmentation={"mirror": ["SI", "AP"]})
    full = train(train_run(blobs, tmp_path / "a", recipe=recipe))

    class Stop(Exception):
        pass

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(train_run(blobs, tmp_path / "b", recipe=recipe),
              progress=Progress(epoch=stop_after_first))
    assert not (tmp_path / "b" / "organs" / "weights_final.pt").exists()
    # the settings come from the run folder's config.json, not from the recipe given now
    resumed = train(train_run(blobs, tmp_path / "b"), resume=True)
    assert resumed["epochs"] == 3
    assert resumed["state_sha256"] == full["state_sha256"]
    lines = (tmp_path / "b" / "organs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_an_existing_run_is_not_replaced_without_overwrite(blobs, tmp_path, run_cli):
    train(train_run(blobs, tmp_path / "m", recipe=tiny_recipe(epochs=1, iterations=1)))
    final = tmp_path / "m" / "organs" / "weights_final.pt"
    before = final.read_bytes()
    with pytest.raises(InputError, match="already there"):
        train(train_run(blobs, tmp_path / "m"))
    assert final.read_bytes() == before
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs",
                  "--device", "cpu")
    assert res.code == 3 and "--resume" in res.stderr and "--overwrite" in res.stderr
    train(train_run(blobs, tmp_path / "m", recipe=tiny_recipe(epochs=1, iterations=1),
                    overwrite=True))


def test_bundle_refuses_tampered_and_pickled_weights(blobs, tmp_path):
    train(train_run(blobs, tmp_path / "m", recipe=tiny_recipe(epochs=1, iterations=1)))
    run = tmp_path / "m" / "organs"
    load_bundle(run, "final")
    weights = run / "weights_final.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_bundle(run, "final")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, weights)
    meta = json.loads((run / "model.json").read_text())
    from flarecli.core.io.bundle import sha256

    meta["weights"]["final"]["sha256"] = sha256(weights)  # a consistent but malicious bundle
    save_model_json(run / "model.json", meta)
    with pytest.raises(ModelError, match="holds Python objects beyond tensors, which flare "
                                         "never unpickles"):
        load_bundle(run, "final")
    with pytest.raises(ModelError, match="no model.json"):
        load_bundle(tmp_path)


def test_a_network_built_after_its_weights_went_away_is_a_model_error(blobs, tmp_path):
    """Inference builds a stage's torch network only when a backend needs it: weights that
    disappeared after verification (an unpacked model zip, cleaned up) are one clear error."""
    from flarecli.core.io.bundle import network_of, read_bundle, verified_weights

    train(train_run(blobs, tmp_path / "m", recipe=tiny_recipe(epochs=1, iterations=1)))
    run = tmp_path / "m" / "organs"
    meta = read_bundle(run)
    path = verified_weights(run, meta, "final")
    path.unlink()
    with pytest.raises(ModelError, match="cannot load weights"):
        network_of(path, meta)


def test_mean_teacher_exports_its_ema_teacher(blobs, tmp_path):
    recipe = tiny_recipe(epochs=1, iterations=3, method={"name": "mean_teacher",
                                                         "ema_decay": 0.9})
    r = train(train_run(blobs, tmp_path / "m", stage="tumor", recipe=recipe))
    meta = json.loads((tmp_path / "m" / "tumor" / "model.json").read_text())
    assert meta["exported"] == "ema_teacher"
    assert meta["stage"]["network"]["heads"] == {"tumor": [14]}
    cfg = json.loads((tmp_path / "m" / "tumor" / "config.json").read_text())
    assert list(cfg["phases"][0]["cases"]) == ["b0", "b2"]  # only tumor-annotated cases
    assert r["epochs"] == 1
    # the exported weights are the teacher's, not the student's
    ckpt = torch.load(tmp_path / "m" / "tumor" / "checkpoint_last.pt", weights_only=True)
    final = load_bundle(tmp_path / "m" / "tumor", "final")[0].state_dict()
    key = "stem.0.weight"
    assert torch.equal(final[key], ckpt["teacher"][key])
    assert not torch.equal(final[key], ckpt["model"][key])


def test_a_supervised_tumor_model_exports_the_trained_network(blobs, tmp_path):
    recipe = tiny_recipe(epochs=1, iterations=3, method={"name": "supervised"})
    train(train_run(blobs, tmp_path / "m", stage="tumor", recipe=recipe))
    meta = json.loads((tmp_path / "m" / "tumor" / "model.json").read_text())
    assert meta["exported"] == "model" and meta["stage"]["method"]["name"] == "supervised"
    ckpt = torch.load(tmp_path / "m" / "tumor" / "checkpoint_last.pt", weights_only=True)
    assert ckpt["teacher"] == {}
    final = load_bundle(tmp_path / "m" / "tumor", "final")[0].state_dict()
    assert all(torch.equal(final[k], ckpt["model"][k]) for k in final)


def test_coarse_stage_merges_every_label(blobs, tmp_path):
    train(train_run(blobs, tmp_path / "m", stage="coarse",
                    recipe=tiny_recipe(epochs=1, iterations=2)))
    meta = json.loads((tmp_path / "m" / "coarse" / "model.json").read_text())
    assert meta["stage"]["role"] == "roi"
    assert meta["stage"]["network"]["heads"] == {"abdomen": [list(range(1, 15))]}


def test_staged_training_freezes_exactly_the_other_parameters(blobs, tmp_path):
    """A two-head network: step 1 trains everything, step 2 only the tumor branch (and only
    the tumor head's loss); the rest must be bit-identical across step 2."""
    recipe = tiny_recipe(
        stages=("organs",), epochs=1, iterations=2,
        extra={"models.student.outputs": [{"stage": "organs", "head": "organs"},
                                          {"stage": "organs", "head": "tumor"},
                                          {"stage": "tumor", "required": False}],
               "models.teacher.outputs": [{"stage": "teacher", "head": "organs"}]},
        network={"arch": "resunet", "args": {**{"base_channels": 4, "n_down": 2,
                                                 "blocks_down": 1, "blocks_up": 1},
                                              "split_levels": 1},
                 "heads": {"organs": [1, 3, 13], "tumor": [14]}},
        method={"name": "staged", "steps": [
            {"name": "all", "data": "all"},
            {"name": "tumor-branch", "data": "tumor_annotated", "train": ["branches.tumor"],
             "heads": ["tumor"], "lr": 0.01, "epochs": 2}]})
    seen = {}

    def snapshot(record):
        if record.get("phase") == "all":  # the end of step 1
            state = torch.load(tmp_path / "m" / "organs" / "checkpoint_last.pt",
                               weights_only=True)["model"]
            seen["after_step_1"] = {k: v.clone() for k, v in state.items()}

    train(train_run(blobs, tmp_path / "m", recipe=recipe), progress=Progress(epoch=snapshot))
    after = load_bundle(tmp_path / "m" / "organs", "final")[0].state_dict()
    before = seen["after_step_1"]
    frozen = [k for k in after if not k.startswith("branches.tumor.")]
    trained = [k for k in after if k.startswith("branches.tumor.") and "weight" in k]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    lines = [json.loads(x) for x in (tmp_path / "m" / "organs" / "metrics.jsonl")
             .read_text().splitlines()]
    assert [x["phase"] for x in lines] == ["all", "tumor-branch", "tumor-branch"]
    cfg = json.loads((tmp_path / "m" / "organs" / "config.json").read_text())
    assert cfg["phases"][1]["cases"] == ["b0", "b2"]


def test_a_frozen_group_that_names_no_parameter_is_refused(blobs, tmp_path, run_cli):
    recipe = tiny_recipe(stages=("organs",), method={"name": "staged", "steps": [
        {"name": "s", "train": ["branches.cancer"]}]})
    with pytest.raises(RecipeError, match="'branches.cancer' names no parameter"):
        train(train_run(blobs, tmp_path / "m", recipe=recipe))
    assert not (tmp_path / "m" / "organs").exists()
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--set",
                  'stages.organs.method={"name": "staged", "steps": [{"name": "s", '
                  '"train": ["decodr"]}]}', "--device", "cpu")
    assert res.code == 5 and "'decodr' names no parameter" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2 and "Traceback" not in res.stderr


def test_warm_start_from_a_bundle(blobs, tmp_path):
    train(train_run(blobs, tmp_path / "a", recipe=tiny_recipe(epochs=1, iterations=2)))
    # (almost) no learning keeps the weights: a tiny lr shows the init was loaded
    frozen = tiny_recipe(epochs=1, iterations=1, optimizer={"name": "sgd", "lr": 1e-12})
    train(train_run(blobs, tmp_path / "b", recipe=frozen, init=str(tmp_path / "a" / "organs")))
    a = load_bundle(tmp_path / "a" / "organs", "final")[0].state_dict()
    b = load_bundle(tmp_path / "b" / "organs", "final")[0].state_dict()
    fresh = load_bundle(tmp_path / "a" / "organs", "final")[0]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(a["stem.0.weight"], torch.zeros_like(a["stem.0.weight"]))
    del fresh
    # a tumor model from the organ model: every tensor but the 2-class heads is taken
    train(train_run(blobs, tmp_path / "t", stage="tumor", recipe=frozen,
                    init=str(tmp_path / "a" / "organs")))
    tumor = load_bundle(tmp_path / "t" / "tumor")[0].state_dict()
    body = [k for k in a if not k.startswith("heads.")]
    assert body and all(torch.allclose(a[k], tumor[k], atol=1e-5) for k in body)
    assert tumor["heads.0.weight"].shape[0] == 2 != a["heads.0.weight"].shape[0]
    with pytest.raises(ModelError, match="does not fit"):
        train(train_run(blobs, tmp_path / "c", recipe=tiny_recipe(
            epochs=1, iterations=1, network__args={**{"base_channels": 8, "n_down": 2,
                                                      "blocks_down": 1, "blocks_up": 1}}),
            init=str(tmp_path / "a" / "organs")))


def test_bad_options(blobs, tmp_path, run_cli):
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--model",
                  "studnt")
    assert res.code == 5 and "did you mean 'student'" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--model",
                  "tiny", "--size", "18", "--device", "cpu")
    assert res.code == 5 and "multiple of" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--resume")
    assert res.code == 3 and "nothing to resume" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "liver")
    assert res.code == 5 and "no stage 'liver'" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--set",
                  "stages.organs.optimizer.lrr=0.1")
    assert res.code == 5 and "did you mean 'lr'" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--data",
                  "tumour_annotated")
    assert res.code == 5 and "did you mean 'tumor_annotated'" in res.stderr
    with pytest.raises(InputError, match="no such dataset"):
        train(train_run(tmp_path / "nothing", tmp_path / "m"))


def test_shortcuts_are_recipe_fields(blobs, tmp_path, run_cli):
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--stage", "organs", "--preset",
                  "smoke", "--model", "tiny", "--size", "16", "--epochs", "1",
                  "--iterations", "2", "--batch-size", "1", "--lr", "0.002", "--no-augment",
                  "--val-fraction", "0", "--device", "cpu")
    assert res.code == 0, res.stderr
    stage = json.loads((tmp_path / "m" / "organs" / "model.json").read_text())["stage"]
    assert stage["epochs"] == 1 and stage["iterations"] == 2 and stage["batch_size"] == 1
    assert stage["optimizer"]["lr"] == 0.002 and stage["augmentation"] is None
    assert stage["geometry"]["size_zyx"] == [16, 16, 16]
    assert stage["network"]["args"]["base_channels"] == 4


def _ddp_worker(rank, world, src, out, port, queue):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(train_run(src, out, recipe=tiny_recipe(epochs=1, iterations=2)))
    queue.put((rank, result["state_sha256"]))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_ddp_gloo_two_processes_keep_replicas_identical(blobs, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_ddp_worker, args=(2, str(blobs), str(tmp_path / "m"), port, queue), nprocs=2)
    hashes = dict(queue.get() for _ in range(2))
    assert hashes[0] == hashes[1]
    cfg = json.loads((tmp_path / "m" / "organs" / "config.json").read_text())
    assert cfg["world_size"] == 2


def test_mean_teacher_weight_ramps_up():
    from flarecli.core.training.methods import mt_rampup

    values = [mt_rampup(s, 1000, 0.25) for s in range(0, 1001, 50)]
    assert values[0] == pytest.approx(np.exp(-5)) and values == sorted(values)
    assert mt_rampup(250, 1000, 0.25) == 1.0 == values[-1]
    assert mt_rampup(0, 1000, 0.0) == 1.0


def test_validation_cases_the_init_bundle_trained_on_are_flagged(blobs, tmp_path):
    def notes(out):
        return json.loads((out / "organs" / "config.json").read_text())["notes"]

    short = tiny_recipe(epochs=1, iterations=1)
    held_out = tiny_recipe(epochs=1, iterations=1, val_fraction=0.34)
    train(train_run(blobs, tmp_path / "all", recipe=short))  # the teacher saw every case
    train(train_run(blobs, tmp_path / "s1", recipe=held_out,
                    init=str(tmp_path / "all" / "organs")))
    assert any("trained the init bundle" in n for n in notes(tmp_path / "s1"))
    # the same hold-out for teacher and student: nothing to flag
    train(train_run(blobs, tmp_path / "held", recipe=held_out))
    train(train_run(blobs, tmp_path / "s2", recipe=held_out,
                    init=str(tmp_path / "held" / "organs")))
    assert not any("init bundle" in n for n in notes(tmp_path / "s2"))
