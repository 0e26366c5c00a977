import numpy as np
import pytest

from flarecli.core.errors import InputError
from flarecli.core.io.cases import discover_cases, image_case_id
from tests.conftest import write_case


def test_pairing_unlabeled_orphans_duplicates_and_strays(tmp_path):
    lab = np.zeros((8, 10, 12), np.uint8)
    write_case(tmp_path, "a", lab)
    write_case(tmp_path, "b", None)  # unlabeled
    write_case(tmp_path, "c", lab, labels="labelsTr")
    (tmp_path / "labelsTr" / "c.nii.gz").rename(tmp_path / "labelsTr" / "orphan.nii.gz")
    (tmp_path / "imagesTr" / "notes.txt").write_text("x")
    (tmp_path / "imagesTr" / ".a_0000.nii.gz.tmp.nii.gz").write_text("ignored temp")
    (tmp_path / "imagesTr" / "a_0001.nii.gz").write_bytes(
        (tmp_path / "imagesTr" / "a_0000.nii.gz").read_bytes())
    (tmp_path / "imagesTr" / "b_0000.nii").write_bytes(b"dup")

    found = discover_cases(tmp_path / "imagesTr", tmp_path / "labelsTr")
    by_id = {c.id: c for c in found.cases}
    assert sorted(by_id) == ["a", "b", "c", "orphan"]
    assert by_id["a"].labeled and by_id["a"].problems == []
    assert not by_id["b"].labeled
    assert any("duplicate image" in p for p in by_id["b"].problems)
    assert not by_id["c"].labeled  # its label was renamed away
    assert by_id["orphan"].image is None
    assert by_id["orphan"].problems == ["label orphan.nii.gz has no image"]
    stray = {p.name: m for p, m in found.stray}
    assert "not a NIfTI" in stray["notes.txt"]
    assert "single CT channel" in stray["a_0001.nii.gz"]


def test_names_without_channel_suffix_are_case_ids(tmp_path):
    g = np.zeros((8, 10, 12), np.int16)
    from flarecli.core.io.nifti import write_volume
    from tests.conftest import geom

    for name in ("case_0001", "case_0002", "scan"):
        write_volume(tmp_path / f"{name}.nii.gz", g, geom())
    found = discover_cases(tmp_path)
    assert [c.id for c in found.cases] == ["case_0001", "case_0002", "scan"]
    assert found.stray == []
    assert image_case_id(tmp_path / "x_0000.nii.gz") == ("x", "0000")


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="images folder not found"):
        discover_cases(tmp_path / "nope")


def test_scans_numbered_like_channels_of_one_case_are_its_problem(tmp_path):
    """ct_0000, ct_0001, ct_0002: three patients on three grids were read as one case's
    channels; two were left out with a note and the run exited 0. A channel on another grid
    than _0000, or with no _0000, is the case's problem (an error line, exit 4)."""
    from flarecli.core.io.nifti import write_volume
    from tests.conftest import geom

    for name, shape in (("ct_0000", (8, 10, 12)), ("ct_0001", (9, 10, 12)),
                        ("mr_0000", (8, 10, 12)), ("mr_0001", (8, 10, 12)),
                        ("lone_0001", (8, 10, 12))):
        write_volume(tmp_path / f"{name}.nii.gz", np.zeros(shape, np.int16), geom(shape))
    found = discover_cases(tmp_path)
    by_id = {c.id: c for c in found.cases}
    assert sorted(by_id) == ["ct", "lone", "mr"]
    (ct,) = by_id["ct"].problems
    assert ct.startswith("ct_0001.nii.gz is not on the grid of ct_0000.nii.gz (size 12x10x9 "
                         "vs 12x10x8")
    assert by_id["lone"].problems == [
        "lone_0001.nii.gz: a channel with no lone_0000 beside it; flare reads one CT channel, "
        "_0000 (a scan named like a channel?)"]
    assert by_id["mr"].problems == [] and by_id["mr"].image.name == "mr_0000.nii.gz"
    assert [p.name for p, _ in found.stray] == ["mr_0001.nii.gz"]  # a channel: a note
