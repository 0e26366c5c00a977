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
