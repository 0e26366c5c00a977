"""flare train on tiny settings (CPU): learning, resume, bundles, mean teacher, DDP."""

import json

import numpy as np
import pytest
import torch

from flarecli.core.errors import InputError, ModelError
from flarecli.core.io.bundle import load_bundle
from flarecli.core.training.loop import Progress, TrainConfig, train
from tests.conftest import geom, write_case


def blob_case(root, case_id, seed, tumor=False, images="imagesTr", labels="labelsTr"):
    """A 24x32x32 'CT' with three organs (ids 1, 3, 13) of distinct HU, optionally a tumor."""
    rng = np.random.default_rng(seed)
    shape = (24, 32, 32)
    zz, yy, xx = np.mgrid[:24, :32, :32]
    label = np.zeros(shape, np.uint8)
    image = rng.normal(-80, 15, shape)
    for lab, hu, c in ((1, 100, (12, 10, 10)), (3, 200, (12, 22, 22)), (13, 40, (8, 22, 9))):
        c = np.array(c) + rng.integers(-1, 2, 3)
        m = ((zz - c[0]) / 6) ** 2 + ((yy - c[1]) / 6) ** 2 + ((xx - c[2]) / 5) ** 2 <= 1
        label[m] = lab
        image[m] = rng.normal(hu, 15, m.sum())
    if tumor:
        m = (zz - 12) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 6
        label[m] = 14
        image[m] = rng.normal(-10, 10, m.sum())
    write_case(root, case_id, label, geom(shape, spacing_xyz=(1.5, 1.5, 2.0)),
               image=image.astype(np.int16), images=images, labels=labels)


def config(src, out, **kw):
    base = dict(source=str(src), out=str(out), model="tiny", size=(16, 16, 16), epochs=2,
                iterations=4, batch_size=2, augment=False, val_fraction=0.0, device="cpu",
                workers=0, optimizer="adamw", lr=3e-3, warmup_epochs=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    for i in range(3):
        blob_case(root, f"b{i}", i, tumor=i != 1)
    return root


def predict(model, cfg, case_path):
    from flarecli.core.preprocessing.stages import load_cached
    from flarecli.core.training import data as D

    image, label = D.make_sample(load_cached(case_path), 0, cfg.size, 0.0,
                                 D.target_lut(cfg.target), None, "cpu", train=False)
    with torch.no_grad():
        pred = model(image[None]).argmax(1)[0]
    return pred, label


def test_overfits_one_case_and_loss_goes_down(tmp_path):
    blob_case(tmp_path / "one", "solo", 0)
    cfg = config(tmp_path / "one", tmp_path / "m", epochs=8, iterations=25, batch_size=1,
                 lr=1e-2, jitter=0.0)
    result = train(cfg)
    run = tmp_path / "m" / "organs"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 8 and metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    model, meta = load_bundle(run, "final")
    assert meta["target"] == "organs" and meta["num_classes"] == 14
    assert meta["training"]["epochs"] == 8 and meta["preprocessing"]["intensity"]["mode"] == \
        "foreground"
    cached = next((tmp_path / "m" / "cache" / "fine").glob("solo-*.npz"))
    pred, label = predict(model, cfg, cached)
    for c in (1, 3, 13):
        g, p = label == c, pred == c
        assert 2 * (g & p).sum() / (g.sum() + p.sum()) > 0.9, c
    assert result["epochs"] == 8


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(blobs, tmp_path):
    full = train(config(blobs, tmp_path / "a", epochs=3, augment=True, jitter=0.1))

    class Stop(Exception):
        pass

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config(blobs, tmp_path / "b", epochs=3, augment=True, jitter=0.1),
              progress=Progress(epoch=stop_after_first))
    assert not (tmp_path / "b" / "organs" / "weights_final.pt").exists()
    resumed = train(config(blobs, tmp_path / "b"), resume=True)  # options come from config.json
    assert resumed["epochs"] == 3
    assert resumed["state_sha256"] == full["state_sha256"]
    lines = (tmp_path / "b" / "organs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_bundle_refuses_tampered_and_pickled_weights(blobs, tmp_path):
    train(config(blobs, tmp_path / "m", epochs=1, iterations=1))
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
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="cannot load weights"):
        load_bundle(run, "final")
    with pytest.raises(ModelError, match="no model.json"):
        load_bundle(tmp_path)


def test_mean_teacher_tumor_and_coarse_stage(blobs, tmp_path):
    r = train(config(blobs, tmp_path / "m", target="tumor", epochs=1, iterations=2,
                     ema_decay=0.9))
    meta = json.loads((tmp_path / "m" / "tumor" / "model.json").read_text())
    assert meta["exported"] == "ema_teacher" and meta["label_map"] == {"0": 0, "1": 14}
    cfg = json.loads((tmp_path / "m" / "tumor" / "config.json").read_text())
    assert [c["id"] for c in cfg["train_cases"]] == ["b0", "b2"]  # only tumor-labelled cases
    assert r["epochs"] == 1
    train(config(blobs, tmp_path / "m", stage="coarse", epochs=1, iterations=2))
    meta = json.loads((tmp_path / "m" / "coarse" / "model.json").read_text())
    assert meta["target"] == "abdomen" and meta["preprocessing"]["stage"]["stage"] == "coarse"


def test_warm_start_from_a_bundle(blobs, tmp_path):
    first = train(config(blobs, tmp_path / "a", epochs=1, iterations=2))
    # zero steps of learning would keep the weights: lr 0 shows the init was loaded
    second = train(config(blobs, tmp_path / "b", epochs=1, iterations=1, lr=0.0,
                          init=str(tmp_path / "a" / "organs")))
    assert second["state_sha256"] == first["state_sha256"]
    # a tumor model from the organ model: every tensor but the 2-class heads is taken
    train(config(blobs, tmp_path / "t", target="tumor", epochs=1, iterations=1, lr=0.0,
                 init=str(tmp_path / "a" / "organs")))
    organs = load_bundle(tmp_path / "a" / "organs")[0].state_dict()
    tumor = load_bundle(tmp_path / "t" / "tumor")[0].state_dict()
    body = [k for k in organs if not k.startswith("heads.")]
    assert body and all(torch.allclose(organs[k], tumor[k]) for k in body)  # EMA rounding
    assert tumor["heads.0.weight"].shape[0] == 2 != organs["heads.0.weight"].shape[0]
    with pytest.raises(ModelError, match="does not fit"):
        train(config(blobs, tmp_path / "c", model="small", epochs=1, iterations=1,
                     init=str(tmp_path / "a" / "organs")))


def test_bad_options(blobs, tmp_path, run_cli):
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--model", "studnt")
    assert res.code == 3 and "did you mean 'student'" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--model", "tiny", "--size", "18",
                  "--device", "cpu")
    assert res.code == 3 and "multiple of" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--resume")
    assert res.code == 3 and "nothing to resume" in res.stderr
    res = run_cli("train", blobs, "--out", tmp_path / "m", "--target", "liver")
    assert res.code == 3 and "invalid target" in res.stderr
    with pytest.raises(InputError, match="no such dataset"):
        train(config(tmp_path / "nothing", tmp_path / "m"))


def _ddp_worker(rank, world, src, out, port, queue):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(config(src, out, epochs=1, iterations=2))
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
    from flarecli.core.training.loop import MT_RAMPUP, mt_rampup

    values = [mt_rampup(s, 1000) for s in range(0, 1001, 50)]
    assert values[0] == pytest.approx(np.exp(-5)) and values == sorted(values)
    assert mt_rampup(int(MT_RAMPUP * 1000), 1000) == 1.0 == values[-1]


def test_validation_cases_the_init_bundle_trained_on_are_flagged(blobs, tmp_path):
    def notes(out):
        return json.loads((out / "organs" / "config.json").read_text())["notes"]

    train(config(blobs, tmp_path / "all", epochs=1, iterations=1))  # teacher saw every case
    train(config(blobs, tmp_path / "s1", epochs=1, iterations=1, val_fraction=0.34,
                 init=str(tmp_path / "all" / "organs")))
    assert any("trained the --init bundle" in n for n in notes(tmp_path / "s1"))
    # the same hold-out for teacher and student: nothing to flag
    train(config(blobs, tmp_path / "held", epochs=1, iterations=1, val_fraction=0.34))
    train(config(blobs, tmp_path / "s2", epochs=1, iterations=1, val_fraction=0.34,
                 init=str(tmp_path / "held" / "organs")))
    assert not any("--init" in n for n in notes(tmp_path / "s2"))
