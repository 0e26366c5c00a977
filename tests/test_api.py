"""The Python API: the same engine and scores as the command line, silent, exceptions."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

import flarecli
from flarecli.core.errors import FlareError, InputError
from flarecli.core.io.nifti import read_volume, write_volume


@pytest.fixture
def model(tiny_model):
    return tiny_model


def test_segment_matches_flare_infer_and_keeps_the_grid(model, tmp_path, run_cli, capsys):
    images = model / "data" / "imagesTr"
    res = run_cli("infer", images, tmp_path / "out", "--model", model / "model", "--backend",
                  "torch")
    assert res.code == 0, res.stderr
    capsys.readouterr()
    seg = flarecli.Segmenter(model / "model", device="cpu", backend="torch")
    from_path = seg.segment(images / "b0_0000.nii.gz")
    image = sitk.ReadImage(str(images / "b1_0000.nii.gz"))
    from_image = seg.segment(image)
    assert capsys.readouterr() == ("", "")  # silent
    for got, case in ((from_path, "b0"), (from_image, "b1")):
        expected, g = read_volume(tmp_path / "out" / f"{case}.nii.gz")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got), expected)
        assert got.GetSpacing() == pytest.approx(g.spacing_xyz)
        assert got.GetOrigin() == pytest.approx(g.origin_xyz)
        assert got.GetDirection() == pytest.approx(g.direction)
    assert set(seg.backends) == {"coarse", "organs", "tumor"}
    one = flarecli.segment(image, model / "model", device="cpu", backend="torch")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one), sitk.GetArrayFromImage(from_image))


def test_evaluate_and_stats_give_what_the_commands_write(model, tmp_path, run_cli):
    labels = model / "data" / "labelsTr"
    pred = np.roll(read_volume(labels / "b0.nii.gz")[0], 1, axis=1)
    g = read_volume(labels / "b0.nii.gz")[1]
    write_volume(tmp_path / "pred" / "b0.nii.gz", pred, g)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "b0.nii.gz").symlink_to(labels / "b0.nii.gz")
    res = run_cli("evaluate", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "e.json")
    assert res.code == 0, res.stderr
    summary = json.loads((tmp_path / "e.json").read_text())
    scores = flarecli.evaluate(tmp_path / "pred" / "b0.nii.gz", labels / "b0.nii.gz")
    for c, entry in summary["per_class"].items():
        assert scores[int(c)]["dsc"] == pytest.approx(entry["dsc"])
        assert scores[int(c)]["nsd"] == pytest.approx(entry["nsd"])
    res = run_cli("stats", tmp_path / "gt", "--images", model / "data" / "imagesTr",
                  "--json", tmp_path / "s.json", "--min-tumor-mm3", "0")
    assert res.code == 0, res.stderr
    expected = json.loads((tmp_path / "s.json").read_text())["cases"][0]
    got = flarecli.stats(sitk.ReadImage(str(labels / "b0.nii.gz")),
                         model / "data" / "imagesTr" / "b0_0000.nii.gz", min_tumor_mm3=0,
                         case="b0")
    assert json.loads(json.dumps(got)) == expected
    # Python keys classes by int, as evaluate does; an in-memory image has no id
    assert set(got["classes"]) <= set(range(1, 15)) and set(scores) <= set(range(1, 15))
    assert all(isinstance(c, int) for c in got["classes"])
    unnamed = flarecli.stats(sitk.ReadImage(str(labels / "b0.nii.gz")), min_tumor_mm3=0)
    assert unnamed["id"] is None
    assert unnamed["classes"].keys() == got["classes"].keys()
    assert flarecli.stats(labels / "b0.nii.gz")["id"] == "b0"


def test_errors_are_exceptions(model, tmp_path):
    with pytest.raises(InputError, match="NumPy array has no geometry|SimpleITK image"):
        flarecli.evaluate(np.zeros((4, 4, 4)), model / "data" / "labelsTr" / "b0.nii.gz")
    with pytest.raises(FlareError, match="model folder not found"):
        flarecli.Segmenter(tmp_path / "nowhere", device="cpu")
    other = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    with pytest.raises(InputError, match="prediction vs ground truth"):
        flarecli.evaluate(other, model / "data" / "labelsTr" / "b0.nii.gz")
    nan = sitk.GetImageFromArray(np.full((4, 5, 6), np.nan, np.float32))
    with pytest.raises(FlareError, match="NaN"):
        flarecli.Segmenter(model / "model", device="cpu", backend="torch").segment(nan)
