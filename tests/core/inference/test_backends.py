"""The OpenVINO backend against torch: agreement, the compiled-model cache, fallback and
errors, read-only model folders."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume
from flarecli.core.training.run import train
from tests.conftest import blob_case, save_model_json, tiny_recipe, train_run

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny stmt student (coarse + organs; the tumor stage is optional) trained long enough
    to have few near-ties, and test scans."""
    root = tmp_path_factory.mktemp("backends")
    for i in range(4):
        blob_case(root / "data", f"b{i}", i, tumor=i % 2 == 0)
    for i in range(2):
        blob_case(root / "test", f"t{i}", 10 + i, tumor=True, images="images", labels="labels")
    out = root / "model"
    adamw = {"name": "adamw", "lr": 1e-2, "weight_decay": 3e-5, "schedule": "poly",
             "warmup_epochs": 0}
    for stage, epochs in (("coarse", 4), ("organs", 10)):
        train(train_run(root / "data", out, stage=stage,
                        recipe=tiny_recipe(epochs=epochs, iterations=20, optimizer=adamw)))
    return out, root / "test" / "images"


def infer(run_cli, model, images, out, *extra):
    res = run_cli("infer", images, out, "--model", model, "--device", "cpu", *extra)
    assert res.code == 0, res.stderr
    return json.loads((out / "infer.json").read_text()), res


def labels(folder):
    return {p.name: read_volume(p)[0] for p in sorted(folder.glob("*.nii.gz"))}


def test_backends_agree_and_the_run_record_says_which_ran(trained, tmp_path, run_cli):
    model, images = trained
    rec_t, _ = infer(run_cli, model, images, tmp_path / "torch", "--backend", "torch")
    rec_o, _ = infer(run_cli, model, images, tmp_path / "ov", "--backend", "openvino")
    rec_f, _ = infer(run_cli, model, images, tmp_path / "f32", "--backend", "openvino",
                     "--precision", "f32")
    assert {b["backend"] for b in rec_t["backends"].values()} == {"torch"}
    assert {b["backend"] for b in rec_o["backends"].values()} == {"openvino"}
    assert {b["precision"] for b in rec_f["backends"].values()} == {"f32"}
    a, b, c = labels(tmp_path / "torch"), labels(tmp_path / "ov"), labels(tmp_path / "f32")
    for name in a:
        fg = (a[name] > 0) | (b[name] > 0)
        assert fg.sum() > 100
        assert (a[name][fg] != b[name][fg]).mean() < 0.005, name
        fg = (a[name] > 0) | (c[name] > 0)
        assert (a[name][fg] != c[name][fg]).mean() < 0.001, name


def test_auto_is_openvino_on_the_cpu_and_repeatable(trained, tmp_path, run_cli):
    model, images = trained
    rec, _ = infer(run_cli, model, images, tmp_path / "one")
    assert {b["backend"] for b in rec["backends"].values()} == {"openvino"}
    infer(run_cli, model, images, tmp_path / "two")
    one, two = labels(tmp_path / "one"), labels(tmp_path / "two")
    assert all(np.array_equal(one[k], two[k]) for k in one)


def entries(cache):
    return sorted(p for p in (cache / "openvino").iterdir() if not p.name.startswith("."))


def test_the_cache_is_written_reused_invalidated_and_never_trusted_when_corrupt(
        trained, tmp_path, run_cli):
    model, images = trained
    cache = tmp_path / "cache"
    opts = ("--backend", "openvino", "--cache-dir", cache, "--overwrite")
    rec, res = infer(run_cli, model, images, tmp_path / "a", *opts)
    assert not any(b["cached"] for b in rec["backends"].values())
    assert len(entries(cache)) == 2  # coarse, organs
    # the first run says why it takes long before any scan (30-50 s for real models)
    for stage in ("coarse", "organs"):
        assert (f"compiling '{stage}' for this CPU (once; cached in {cache / 'openvino'})"
                in res.stderr)
        assert f"compiled '{stage}' in " in res.stderr
    first = labels(tmp_path / "a")
    # previews and statistics say so in a log (stderr is not a terminal here)
    rec, res = infer(run_cli, model, images, tmp_path / "a", *opts, "--stats",
                     tmp_path / "s.json", "--preview", tmp_path / "png")
    assert all(b["cached"] for b in rec["backends"].values())
    assert "compiling" not in res.stderr
    assert f"previews into {tmp_path / 'png'}: 2 ..." in res.stderr
    assert "statistics: 2 ..." in res.stderr and "statistics: done in" in res.stderr
    assert all(np.array_equal(first[k], v) for k, v in labels(tmp_path / "a").items())

    # a corrupt blob is rebuilt, with a note, and the output is the same
    blob = next(iter(entries(cache))) / "model.blob"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    rec, res = infer(run_cli, model, images, tmp_path / "a", *opts)
    assert "unusable" in res.stderr and "rebuilding" in res.stderr
    assert sorted(b["cached"] for b in rec["backends"].values()) == [False, True]
    assert all(np.array_equal(first[k], v) for k, v in labels(tmp_path / "a").items())
    assert len(entries(cache)) == 2

    # new weights (a retrained stage) make a new entry
    copy = tmp_path / "model2"
    shutil.copytree(model, copy)
    _replace_weights(copy / "organs")
    rec, _ = infer(run_cli, copy, images, tmp_path / "b", *opts)
    assert rec["backends"]["organs"]["cached"] is False
    assert rec["backends"]["coarse"]["cached"] is True
    assert len(entries(cache)) == 3


def test_a_plain_run_compiles_the_argmax_graph_and_tta_the_logits_graph(
        trained, tmp_path, run_cli):
    """Plain inference runs networks that end in their argmax; TTA needs the softmax, so the
    output stages get logits graphs (the coarse stage keeps its labels graph); the labels
    agree with torch's argmax of the same network's logits."""
    model, images = trained
    cache = tmp_path / "cache"
    opts = ("--backend", "openvino", "--precision", "f32", "--cache-dir", cache)
    infer(run_cli, model, images, tmp_path / "plain", *opts)
    kinds = sorted(json.loads((e / "entry.json").read_text())["outputs"] for e in entries(cache))
    assert kinds == ["labels", "labels"]
    infer(run_cli, model, images, tmp_path / "tta", *opts, "--tta")
    kinds = sorted(json.loads((e / "entry.json").read_text())["outputs"] for e in entries(cache))
    assert kinds == ["labels", "labels", "logits"]

    import torch

    from flarecli.core.inference.backends import BackendChoice
    from flarecli.core.inference.stages import load_stage

    choice = BackendChoice("openvino", "f32", cache)
    device = torch.device("cpu")
    ov = load_stage("organs", model / "organs", device, choice=choice, probabilities=False)
    torch_stage = load_stage("organs", model / "organs", device)
    size = tuple(ov.stage.geometry.size_zyx)
    x = np.random.default_rng(0).normal(size=(1, 1, *size)).astype(np.float32)
    got = ov.backend.labels(x)["organs"]  # OpenVINO hands out NumPy arrays
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.uint8 and tuple(got.shape) == (1, *size)
    assert np.array_equal(got, ov.backend(x)["organs"].argmax(1))  # both graphs
    want = torch_stage.backend.labels(x)["organs"]  # torch: tensors on its device
    assert isinstance(want, torch.Tensor)
    assert (got != want.numpy()).mean() < 0.001


def test_argmax_labels_is_torch_argmax_ties_included():
    import torch

    from flarecli.core.inference.arrays import argmax_labels

    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 14, 5, 6, 7, generator=g)
    y[:, 9] = y[:, 4]  # exact ties: the first class wins
    y[0, :, 0, 0, 0] = 1.0  # all tied: class 0
    want = y.argmax(1).to(torch.uint8)
    assert torch.equal(argmax_labels(y), want)
    assert int(want[0, 0, 0, 0]) == 0 and bool((want != 9).all())
    assert torch.equal(argmax_labels(y[:, :1]), torch.zeros(2, 5, 6, 7, dtype=torch.uint8))
    # the NumPy loop (OpenVINO's logits) agrees, ties included
    got = argmax_labels(y.numpy())
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8
    assert np.array_equal(got, want.numpy())
    assert np.array_equal(argmax_labels(y[:, :1].numpy()), np.zeros((2, 5, 6, 7), np.uint8))


def test_int8_is_calibrated_on_the_named_scans_cached_and_close_to_the_default(
        trained, tmp_path, run_cli):
    pytest.importorskip("nncf")
    model, images = trained
    calib = model.parent / "data" / "imagesTr"
    cache = tmp_path / "cache"
    rec_d, _ = infer(run_cli, model, images, tmp_path / "default", "--cache-dir", cache)
    opts = ("--precision", "int8", "--calibration", calib, "--cache-dir", cache)
    rec, res = infer(run_cli, model, images, tmp_path / "int8", *opts)
    # quantization draws nothing: stdout is the summary line alone
    assert res.stdout.strip().startswith("segmented") and len(res.stdout.splitlines()) == 1
    assert {b["precision"] for b in rec["backends"].values()} == {"int8"}
    assert not any(b["cached"] for b in rec["backends"].values())
    digests = {b["calibration_sha256"] for b in rec["backends"].values()}
    assert len(digests) == 1
    a, b = labels(tmp_path / "default"), labels(tmp_path / "int8")
    for name in a:
        fg = (a[name] > 0) | (b[name] > 0)
        assert (a[name][fg] == b[name][fg]).mean() > 0.9, name

    # cached: no calibration run, same labels; other scans make other entries
    rec, _ = infer(run_cli, model, images, tmp_path / "again", *opts)
    assert all(b["cached"] for b in rec["backends"].values())
    assert all(np.array_equal(v, labels(tmp_path / "again")[k]) for k, v in b.items())
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    first = sorted(calib.glob("*.nii.gz"))[0]
    shutil.copy(first, fewer / first.name)
    rec, _ = infer(run_cli, model, images, tmp_path / "fewer_out", "--precision", "int8",
                   "--calibration", fewer, "--cache-dir", cache)
    assert not any(b["cached"] for b in rec["backends"].values())
    assert {b["calibration_sha256"] for b in rec["backends"].values()}.isdisjoint(digests)


def test_int8_usage_errors_are_one_line_and_exit_code_3(trained, tmp_path, run_cli,
                                                          monkeypatch):
    import importlib.util
    import sys

    model, images = trained
    calib = model.parent / "data" / "imagesTr"

    def fails(*extra, out=tmp_path / "o"):
        res = run_cli("infer", images, out, "--model", model, "--device", "cpu", *extra)
        assert res.code == 3, res.stderr
        assert "Traceback" not in res.stderr
        return res.stderr

    assert "--calibration" in fails("--precision", "int8")
    assert "int8" in fails("--precision", "int8", "--calibration", calib, "--backend", "torch")
    assert "int8 only" in fails("--calibration", calib)
    assert str(calib) in fails("--precision", "int8", "--calibration", calib, out=calib / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_0000.nii.gz").write_bytes(b"not a scan")
    if importlib.util.find_spec("nncf") is not None:  # an unreadable calibration scan
        assert "x_0000.nii.gz" in fails("--precision", "int8", "--calibration", bad,
                                        "--cache-dir", tmp_path / "cache")
    monkeypatch.setitem(sys.modules, "nncf", None)  # not installed
    assert "NNCF" in fails("--precision", "int8", "--calibration", calib)
    assert not (calib / "out").exists()


def _replace_weights(bundle):
    """Perturb a bundle's weights and record their new checksum (a retrained stage)."""
    import torch

    meta = json.loads((bundle / "model.json").read_text())
    for name, entry in meta["weights"].items():
        path = bundle / entry["file"]
        state = torch.load(path, weights_only=True)
        state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
        torch.save(state, path)
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        meta["weights"][name] = entry
    save_model_json(bundle / "model.json", meta)


def test_a_tampered_bundle_is_refused_before_conversion(trained, tmp_path, run_cli):
    model, images = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    for weights in (copy / "organs").glob("weights_*.pt"):
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    res = run_cli("infer", images, tmp_path / "out", "--model", copy, "--backend", "openvino",
                  "--cache-dir", tmp_path / "cache")
    assert res.code == 5 and "checksum mismatch" in res.stderr
    assert not (tmp_path / "cache" / "openvino").exists() or \
        len(entries(tmp_path / "cache")) <= 1  # only stages loaded before the tampered one


def tree(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file()
                                         else None) for p in sorted(folder.rglob("*"))}


def test_a_read_only_model_folder_is_never_written(trained, tmp_path, run_cli):
    model, images = trained
    copy = tmp_path / "share"
    shutil.copytree(model, copy)
    for p in [copy, *copy.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = tree(copy)
    try:
        infer(run_cli, copy, images, tmp_path / "out", "--backend", "openvino",
              "--cache-dir", tmp_path / "cache")
        assert tree(copy) == before
        res = run_cli("infer", images, tmp_path / "out2", "--model", copy,
                      "--cache-dir", copy / "cache")
        assert res.code == 3 and "--cache-dir" in res.stderr and "inside" in res.stderr
        assert tree(copy) == before
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture
def no_openvino(monkeypatch):
    import sys

    from flarecli.core.inference import openvino as OV

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(OV, "_core", None)


def test_auto_without_openvino_warns_once_and_uses_torch(trained, tmp_path, run_cli,
                                                        no_openvino):
    model, images = trained
    rec, res = infer(run_cli, model, images, tmp_path / "out")
    assert res.stderr.count("warning: OpenVINO not used") == 1
    assert {b["backend"] for b in rec["backends"].values()} == {"torch"}
    infer(run_cli, model, images, tmp_path / "torch", "--backend", "torch")
    a, b = labels(tmp_path / "out"), labels(tmp_path / "torch")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_explicit_openvino_without_it_is_exit_3(trained, tmp_path, run_cli, no_openvino):
    model, images = trained
    res = run_cli("infer", images, tmp_path / "out", "--model", model, "--backend", "openvino")
    assert res.code == 3 and "openvino is not installed" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2


def test_a_network_that_does_not_compile(trained, tmp_path, run_cli, monkeypatch):
    from flarecli.core.inference import openvino as OV

    def broken(*a, **k):
        raise OV.CompileFailed("unsupported operation")

    monkeypatch.setattr(OV, "_compile", broken)
    model, images = trained
    cache = ("--cache-dir", tmp_path / "empty-cache")
    rec, res = infer(run_cli, model, images, tmp_path / "auto", *cache)
    assert res.stderr.count("warning: OpenVINO not used") == 1
    assert "unsupported operation" in res.stderr
    assert {b["backend"] for b in rec["backends"].values()} == {"torch"}
    assert len(labels(tmp_path / "auto")) == 2
    res = run_cli("infer", images, tmp_path / "ov", "--model", model, "--backend", "openvino",
                  *cache)
    assert res.code == 5 and "cannot compile" in res.stderr


def test_openvino_is_a_cpu_backend():
    import torch

    from flarecli.core.errors import InputError
    from flarecli.core.inference.backends import BackendChoice

    with pytest.raises(InputError, match="runs on the CPU") as e:
        BackendChoice("openvino").check(torch.device("cuda"))
    assert e.value.exit_code == 3
    BackendChoice("auto").check(torch.device("cuda"))  # auto means torch there
    with pytest.raises(InputError, match="--precision"):
        BackendChoice("openvino", "bf17").check(torch.device("cpu"))


FRESH_RUN = """
import sys
from flarecli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
torch = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nncf"))
print("exit", code, "torch modules", len(torch), file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["infer", "pseudolabel"])
def test_a_cached_openvino_run_never_imports_torch(command, trained, tmp_path, run_cli):
    """Once each network is compiled and cached, a fresh process segments with OpenVINO and
    NumPy alone (torch's import is about 2 s of a one-scan run), with the same labels:
    infer asks the networks for labels, pseudolabel for logits (its quality scores)."""
    import subprocess
    import sys

    model, images = trained
    opts = ["--model", model, "--backend", "openvino", "--cache-dir", tmp_path / "cache"]
    res = run_cli(command, images, tmp_path / "first", *opts)  # compiles: torch converts
    assert res.code == 0, res.stderr
    args = [command, images, tmp_path / "fresh", *opts, "--device", "auto"]
    res = subprocess.run([sys.executable, "-c", FRESH_RUN, *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    assert "exit 0 torch modules 0" in res.stderr, res.stderr
    first, fresh = labels(tmp_path / "first"), labels(tmp_path / "fresh")
    assert first and all(np.array_equal(first[k], fresh[k]) for k in first)


def test_a_cached_int8_run_imports_neither_nncf_nor_torch(trained, tmp_path, run_cli):
    """The quantized models come from the cache: NNCF (1.2 s to import, torch inside) is
    only looked for, not loaded, and the labels are those of the run that quantized."""
    import subprocess
    import sys

    pytest.importorskip("nncf")
    model, images = trained
    opts = ["--model", model, "--precision", "int8", "--calibration",
            model.parent / "data" / "imagesTr", "--cache-dir", tmp_path / "cache"]
    res = run_cli("infer", images, tmp_path / "first", *opts)
    assert res.code == 0, res.stderr
    args = ["infer", images, tmp_path / "fresh", *opts]
    res = subprocess.run([sys.executable, "-c", FRESH_RUN, *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    assert "exit 0 torch modules 0" in res.stderr, res.stderr
    first, fresh = labels(tmp_path / "first"), labels(tmp_path / "fresh")
    assert first and all(np.array_equal(first[k], fresh[k]) for k in first)


def test_tracing_at_the_smallest_size_gives_the_full_size_graph():
    """The export traces a network at twice its size divisor (bf16 and large inputs are slow
    in torch); the shapes come from the declared input, so the compiled network must give
    bit for bit what one traced at the run's size gives, two heads included."""
    import torch

    from flarecli.core.inference import openvino as OV
    from flarecli.models.build import build_model

    pytest.importorskip("openvino")
    torch.manual_seed(0)
    net = build_model("resunet", in_channels=1, base_channels=4, n_down=3,
                      heads={"organs": 14, "tumor": 2}, split_levels=1,
                      strides=[(1, 2, 2), 2, 2]).eval()
    shape = (1, 1, 16, 48, 40)
    assert OV._trace_shape(net, shape) == [1, 1, 8, 16, 16]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    small = OV.core().compile_model(OV.convert(net, ("organs", "tumor"), shape), "CPU", config)
    full_shape = OV._trace_shape
    try:
        OV._trace_shape = lambda model, s: list(s)
        full = OV.core().compile_model(OV.convert(net, ("organs", "tumor"), shape), "CPU",
                                       config)
    finally:
        OV._trace_shape = full_shape
    a, b = small(x), full(x)
    for i in range(2):
        assert np.array_equal(a[i], b[i])
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    assert np.abs(a[0] - ref["organs"].numpy()).max() < 1e-3


def test_sure_labels_are_the_argmax_where_it_beats_the_runner_up_by_the_odds():
    """Sure: the chosen class at least p / (1 - p) times as likely as the runner-up -- for a
    two-class head its probability reaches p; from logits (the graphs) and from averaged
    probabilities (a sliding window) alike; the kind's name carries the bars to the compiled
    graph and back."""
    import torch

    from flarecli.core.inference.arrays import argmax_labels
    from flarecli.core.inference.sure import (
        labels_kind,
        sure_from_probabilities,
        sure_labels,
        sure_of_kind,
    )

    g = torch.Generator().manual_seed(0)
    for classes in (2, 5):
        logits = torch.randn(2, classes, 6, 7, 8, generator=g) * 3
        labels = argmax_labels(logits)
        probs = torch.softmax(logits, 1)
        top2 = probs.topk(2, 1).values
        for p in (0.5, 0.8, 0.95):
            want = torch.where(top2[:, 0] >= top2[:, 1] * (p / (1 - p)), labels, 0)
            if classes == 2:
                assert torch.equal(want, torch.where(top2[:, 0] >= p, labels, 0))
            got = sure_labels(logits, labels, p)
            assert got.dtype == labels.dtype
            assert (got != want).sum() <= 1  # a float tie at the bar at most
            assert (p == 0.5) or 0 < int((got > 0).sum()) < int((labels > 0).sum())
            for b in range(2):
                from_probs = sure_from_probabilities(probs[b].numpy(), labels[b].numpy(), p)
                assert (from_probs != want[b].numpy()).sum() <= 1
        assert not sure_labels(logits, labels, 1.0).any()  # a bar of 1: never sure
    assert labels_kind(None) == labels_kind({}) == "labels"
    kind = labels_kind({"tumor": 0.8, "organs": 0.9})
    assert sure_of_kind(kind) == {"organs": 0.9, "tumor": 0.8} and sure_of_kind("labels") == {}
