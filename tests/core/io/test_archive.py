"""flare export and --model model.zip: the same predictions, provenance, and no zip-slip."""

import zipfile

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume


@pytest.fixture
def model(tiny_model):
    return tiny_model


def test_export_then_infer_from_the_zip(model, tmp_path, run_cli):
    res = run_cli("export", model / "model", tmp_path / "m.zip")
    assert res.code == 0, res.stderr
    names = set(zipfile.ZipFile(tmp_path / "m.zip").namelist())
    assert {"recipe.json", "README.md", "coarse/model.json", "organs/model.json",
            "tumor/model.json"} <= names
    assert not any("checkpoint" in n or "metrics" in n for n in names)
    readme = zipfile.ZipFile(tmp_path / "m.zip").read("README.md").decode()
    assert "stmt" in readme and "SHA-256" in readme
    common = ("--device", "cpu", "--backend", "torch")
    images = model / "data" / "imagesTr"
    assert run_cli("infer", images, tmp_path / "a", "--model", model / "model", *common).code == 0
    res = run_cli("infer", images, tmp_path / "b", "--model", tmp_path / "m.zip", *common)
    assert res.code == 0, res.stderr
    for case in ("b0", "b1"):
        np.testing.assert_array_equal(read_volume(tmp_path / "a" / f"{case}.nii.gz")[0],
                                      read_volume(tmp_path / "b" / f"{case}.nii.gz")[0])
    import flarecli

    seg = flarecli.Segmenter(tmp_path / "m.zip", device="cpu", backend="torch")
    assert set(seg.backends) == {"coarse", "organs", "tumor"}


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil", "organs/../../evil",
                                    "a/b/c/deep.pt", "C:evil"])
def test_a_zip_with_a_member_leading_out_is_refused(model, tmp_path, run_cli, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("recipe.json", "{}")
        z.writestr(member, "x")
    res = run_cli("infer", model / "data" / "imagesTr", tmp_path / "out", "--model", bad)
    assert res.code == 5 and "refusing member" in res.stderr
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil").exists()


def test_a_tampered_weights_file_in_a_zip_is_refused(model, tmp_path, run_cli):
    assert run_cli("export", model / "model", tmp_path / "m.zip").code == 0
    src = zipfile.ZipFile(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as z:
        for name in src.namelist():
            data = src.read(name)
            if name.startswith("organs/weights"):
                data = data[:-4] + b"\0\0\0\0"
            z.writestr(name, data)
    res = run_cli("infer", model / "data" / "imagesTr", tmp_path / "out", "--model",
                  tmp_path / "t.zip", "--backend", "torch")
    assert res.code == 5 and "checksum mismatch" in res.stderr
    assert f"{tmp_path / 't.zip'}:organs/weights" in res.stderr  # the zip, not a temp folder
    assert "flare-model-" not in res.stderr
    res = run_cli("export", model / "model", tmp_path / "m.tar")
    assert res.code == 3
    res = run_cli("export", model / "model", model / "model" / "m.zip")
    assert res.code == 3 and "would land inside the model folder" in res.stderr
    assert not (model / "model" / "m.zip").exists()
