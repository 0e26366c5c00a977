"""Model zips and bundles that must be refused (exit 5, one line): duplicate or oversized zip
members, stage folders present but unusable, non-finite weights, unknown model.json fields, an
edited model.json."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.io.nifti import write_volume
from tests.conftest import geom, save_model_json
from tests.core.inference.test_engine import model_dir  # noqa: F401 (a fixture)


@pytest.fixture
def scans(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    write_volume(tmp_path / "in" / "a_0000.nii.gz",
                 np.random.default_rng(0).integers(-500, 500, (8, 10, 12)).astype(np.int16),
                 geom((8, 10, 12)))
    return tmp_path / "in"


def infer(run_cli, scans, model, out):
    return run_cli("infer", scans, out, "--model", model, "--device", "cpu", "--backend",
                   "torch")


def refused(res, *words):
    assert res.code == 5, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("flare: error: ")
    assert all(w in res.stderr.splitlines()[0] for w in words), res.stderr


def rezip(source: Path, target: Path, change=None, extra=()) -> None:
    """Copy a model zip member by member, ``change(name, data)`` -> data, then ``extra``
    members (name, data) appended."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w",
                                                         zipfile.ZIP_DEFLATED) as z:
        for name in src.namelist():
            data = src.read(name)
            z.writestr(name, change(name, data) if change else data)
        for name, data in extra:
            z.writestr(name, data)


@pytest.fixture
def exported(model_dir, tmp_path, run_cli) -> Path:  # noqa: F811
    res = run_cli("export", model_dir, tmp_path / "m.zip")
    assert res.code == 0, res.stderr
    return tmp_path / "m.zip"


def test_the_exported_zip_is_accepted_member_for_member(exported, model_dir, scans,  # noqa
                                                         tmp_path, run_cli):
    names = zipfile.ZipFile(exported).namelist()
    expected = ["recipe.json", "README.md"]
    for stage in ("coarse", "organs", "tumor"):
        meta = json.loads((model_dir / stage / "model.json").read_text())
        expected += [f"{stage}/model.json"] + [f"{stage}/{e['file']}"
                                               for e in meta["weights"].values()]
    assert sorted(names) == sorted(expected) and "organs/weights_final.pt" in names
    assert infer(run_cli, scans, exported, tmp_path / "out").code == 0


def test_a_bundle_zipped_again_with_folder_entries_is_accepted(exported, scans, tmp_path,
                                                               run_cli):
    """Unzipped and zipped again (zip -r, Finder, Windows): each stage folder gets an empty
    entry of its own, which is no member to refuse; a folder entry out of the model is."""
    again = tmp_path / "again.zip"
    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(again, "w") as z:
        for stage in ("coarse", "organs", "tumor"):
            z.writestr(f"{stage}/", b"")
        for name in src.namelist():
            z.writestr(name, src.read(name))
    assert infer(run_cli, scans, again, tmp_path / "out").code == 0
    assert infer(run_cli, scans, exported, tmp_path / "ref").code == 0
    assert (tmp_path / "out" / "a.nii.gz").is_file()
    bad = tmp_path / "bad.zip"
    rezip(exported, bad, extra=[("../", b"")])
    refused(infer(run_cli, scans, bad, tmp_path / "out2"), "../")


def test_a_duplicate_member_name_is_refused(exported, scans, tmp_path, run_cli):
    bad = tmp_path / "dup.zip"
    recipe = json.loads(zipfile.ZipFile(exported).read("recipe.json"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate: that is the point
        rezip(exported, bad, extra=[("recipe.json", json.dumps({**recipe, "name": "x"}))])
    refused(infer(run_cli, scans, bad, tmp_path / "out"), "recipe.json", "twice")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_members_no_model_names_are_refused(exported, scans, tmp_path, run_cli):
    bad = tmp_path / "extra.zip"
    rezip(exported, bad, extra=[("organs/notes.txt", "hello")])
    refused(infer(run_cli, scans, bad, tmp_path / "out"), "organs/notes.txt",
            "no model.json names it")


@pytest.mark.parametrize("declared", [True, False], ids=["declared size", "no declared size"])
def test_an_oversized_member_is_refused_before_anything_is_unpacked(
        declared, exported, scans, tmp_path, run_cli, monkeypatch):
    """A weights member of 8 MiB of zeros (compressed about 1000:1, a small zip bomb) where
    model.json declares a file of a few KiB -- or declares nothing (older bundles): at most
    16 times its compressed size."""
    bomb = tmp_path / "bomb.zip"
    zeros = bytes(8 << 20)

    def change(name, data):
        if name == "organs/weights_final.pt":
            return zeros
        if name == "organs/model.json" and not declared:
            meta = json.loads(data)
            for entry in meta["weights"].values():
                entry.pop("bytes")
            meta.pop("record_sha256")
            return json.dumps(meta)
        return data

    rezip(exported, bomb, change)
    info = zipfile.ZipFile(bomb).getinfo("organs/weights_final.pt")
    assert info.file_size == len(zeros) and info.compress_size < len(zeros) // 500
    opened = []
    real = zipfile.ZipFile.open

    def spy(self, name, *args, **kw):
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real(self, name, *args, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    refused(infer(run_cli, scans, bomb, tmp_path / "out"), "organs/weights_final.pt",
            "unpacks to 8388608 bytes")
    assert opened and all(n.endswith("model.json") for n in opened), opened


def test_a_stream_longer_than_its_size_field_stops_at_the_bound(exported, tmp_path):
    """The size fields of a zip are the archive's word: unpacking itself stops at the bound."""
    from flarecli.core.errors import ModelError
    from flarecli.core.io.archive import _read_limited

    bomb = tmp_path / "bomb.zip"
    rezip(exported, bomb, lambda name, data: bytes(1 << 20) if name.endswith(".pt") else data)
    with zipfile.ZipFile(bomb) as zf, open(tmp_path / "x", "wb") as dst, \
            pytest.raises(ModelError, match="more than 1000 bytes"):
        _read_limited(zf, zf.getinfo("organs/weights_final.pt"), 1000, bomb, dst)
    assert (tmp_path / "x").stat().st_size <= 1000


# ---- stage folders and bundles ---------------------------------------------------------------

@pytest.mark.parametrize("how", ["weights but no model.json", "model.json a folder",
                                 "a file instead of the folder"])
def test_a_stage_folder_present_but_unusable_is_a_model_error(how, model_dir, scans,  # noqa
                                                              tmp_path, run_cli):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    tumor = folder / "tumor"
    if how == "weights but no model.json":
        (tumor / "model.json").unlink()
    elif how == "model.json a folder":
        (tumor / "model.json").unlink()
        (tumor / "model.json").mkdir()
    else:
        shutil.rmtree(tumor)
        tumor.write_text("x")
    refused(infer(run_cli, scans, folder, tmp_path / "out"), "tumor")
    shutil.rmtree(tumor) if tumor.is_dir() else tumor.unlink()  # absent: optional, fine
    res = infer(run_cli, scans, folder, tmp_path / "out")
    assert res.code == 0, res.stderr


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["NaN", "inf"])
def test_non_finite_weights_are_refused_naming_stage_and_tensor(value, model_dir, scans,  # noqa
                                                                tmp_path, run_cli):
    import hashlib

    import torch

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    weights = folder / "organs" / "weights_final.pt"
    state = torch.load(weights, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = torch.full_like(state[name], value)
    torch.save(state, weights)
    meta = json.loads((folder / "organs" / "model.json").read_text())
    meta["weights"]["final"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    save_model_json(folder / "organs" / "model.json", meta)  # a consistent bundle
    refused(infer(run_cli, scans, folder, tmp_path / "out"), "stage 'organs'", f"'{name}'",
            f"{state[name].numel()} NaN/inf")
    assert not list((tmp_path / "out").glob("*.nii.gz")) if (tmp_path / "out").exists() \
        else True


def test_unknown_model_json_fields_are_refused(model_dir, scans, tmp_path, run_cli):  # noqa
    for where, edit in (("colour", lambda m: m.update(colour="red")),
                        ("weights.final.comment",
                         lambda m: m["weights"]["final"].update(comment="x")),
                        ("architecture.version",
                         lambda m: m["architecture"].update(version=2))):
        folder = tmp_path / where
        shutil.copytree(model_dir, folder)
        meta = json.loads((folder / "organs" / "model.json").read_text())
        edit(meta)
        save_model_json(folder / "organs" / "model.json", meta)
        refused(infer(run_cli, scans, folder, tmp_path / f"out-{where}"),
                f"unknown field '{where}'")


def test_an_edited_model_json_is_refused(model_dir, scans, tmp_path, run_cli):  # noqa: F811
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    path = folder / "organs" / "model.json"
    meta = json.loads(path.read_text())
    assert meta["record_sha256"] and meta["weights"]["final"]["bytes"] > 0
    path.write_text(json.dumps(meta, indent=4))  # re-indented: the same fields, still fine
    assert infer(run_cli, scans, folder, tmp_path / "same").code == 0
    meta["intensity"] = {**meta["intensity"]}
    key = next(k for k, v in meta["intensity"].items() if isinstance(v, float))
    meta["intensity"][key] += 10.0
    path.write_text(json.dumps(meta))
    refused(infer(run_cli, scans, folder, tmp_path / "out"), "organs/model.json",
            "checksum mismatch")


# ---- recipes -----------------------------------------------------------------------------

def test_a_deeply_nested_recipe_is_one_line_exit_5(tmp_path, run_cli):
    for text in ("[" * 100_000 + "]" * 100_000,
                 '{"name": "x", "stages": ' + '{"a": ' * 5000 + "1" + "}" * 5001):
        (tmp_path / "deep.json").write_text(text)
        res = run_cli("recipes", "show", tmp_path / "deep.json")
        assert res.code == 5, res.stderr
        assert res.stderr.startswith("flare: error: ") and "Traceback" not in res.stderr


def test_unknown_networks_are_refused_when_a_recipe_loads(model_dir, scans, tmp_path,  # noqa
                                                          run_cli):
    from flarecli.core.recipes.load import BUILTIN_DIR

    raw = json.loads((BUILTIN_DIR / "stmt.json").read_text())
    stage = next(iter(raw["stages"]))
    for field, edit in (("arch", lambda n: n.update(arch="resunett")),
                        ("args.widht", lambda n: n.setdefault("args", {}).update(widht=3))):
        bad = json.loads(json.dumps(raw))
        edit(bad["stages"][stage].setdefault("network", {}))
        (tmp_path / "r.json").write_text(json.dumps(bad))
        res = run_cli("recipes", "show", tmp_path / "r.json")
        refused(res, f"stages.{stage}.network.{field}")
    assert "did you mean 'resunet'" in run_cli("recipes", "show", tmp_path / "r.json",
                                               "--set", f"stages.{stage}.network.arch=resunett"
                                               ).stderr
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    recipe = json.loads((folder / "recipe.json").read_text())
    for s in recipe["stages"].values():
        s["network"]["arch"] = "unet9000"
    (folder / "recipe.json").write_text(json.dumps(recipe))
    res = infer(run_cli, scans, folder, tmp_path / "out")
    refused(res, "unknown network 'unet9000'")
    assert f"{folder / 'recipe.json'}: stages." in res.stderr  # the file the field is in
