"""Atomic files."""

import pytest

from flarecli.core.io.files import atomic_path


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(".") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_newer_source_reads_a_series_folder_by_its_own_files(tmp_path):
    """A .DS_Store written into a series folder, or a file deleted from it, is no new scan;
    a slice written again is."""
    import os

    from flarecli.core.io.files import newer_source

    series, out = tmp_path / "series", tmp_path / "out.nii.gz"
    series.mkdir()
    for name in ("a.dcm", "b.dcm", "extra.dcm"):
        (series / name).write_bytes(b"x")
    out.write_bytes(b"y")
    for p in series.iterdir():
        os.utime(p, ns=(1, 1))
    os.utime(out, ns=(2, 2))
    (series / ".DS_Store").write_bytes(b"z")  # new, hidden
    (series / "extra.dcm").unlink()  # the folder's own time changes
    assert not newer_source(out, series)
    (series / "b.dcm").write_bytes(b"x2")
    assert newer_source(out, series)
    assert newer_source(out, series / "b.dcm") and not newer_source(out, series / "a.dcm")
    assert not newer_source(tmp_path / "missing.nii.gz", series)

