"""NIfTI names and headers, read without SimpleITK."""

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.io.nifti_header import header_zooms, nifti_suffix, strip_nifti_suffix
from tests.conftest import geom
from tests.core.io.test_nifti import FLIPPED


def test_suffix_helpers():
    assert nifti_suffix("a.NII.GZ") == ".nii.gz"
    assert nifti_suffix("a.nii") == ".nii"
    assert nifti_suffix("a.nrrd") is None
    assert strip_nifti_suffix("case_0000.nii.gz") == "case_0000"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_header_zooms_are_the_stored_pixdim(tmp_path, suffix):
    import struct

    g = geom((5, 6, 7), spacing_xyz=(0.75, 0.8125, 2.5), direction=FLIPPED)
    write_volume(tmp_path / f"a{suffix}", np.zeros(g.shape_zyx, np.uint8), g)
    assert header_zooms(tmp_path / f"a{suffix}") == (0.75, 0.8125, 2.5)
    raw = bytearray((tmp_path / f"a{suffix}").read_bytes() if suffix == ".nii" else b"")
    if raw:  # a header whose pixdim[1] is 3: the zooms follow the header, silently for ITK
        raw[80:84] = struct.pack("<f", 3.0)
        (tmp_path / "b.nii").write_bytes(bytes(raw))
        assert header_zooms(tmp_path / "b.nii")[0] == 3.0
        read_volume(tmp_path / "b.nii")  # ITK's warning is not printed
    assert header_zooms(tmp_path / "missing.nii") is None


def test_a_file_the_system_will_not_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """Permission denied (or an I/O error) is said as the file system says it; a damaged
    gzip stream is still called one. (Root reads any file, so the refusal is simulated.)"""
    import errno

    from flarecli.core.errors import DataError
    from flarecli.core.io import nifti_header as H

    g = geom((5, 6, 7))
    write_volume(tmp_path / "a.nii.gz", np.zeros(g.shape_zyx, np.uint8), g)
    (tmp_path / "bad.nii.gz").write_bytes((tmp_path / "a.nii.gz").read_bytes()[:30])
    with pytest.raises(DataError, match=r"bad\.nii\.gz: truncated or corrupt gzip stream"):
        H.inspect_header(tmp_path / "bad.nii.gz")

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(H, "_open_raw", refuse)
    with pytest.raises(DataError, match=r"a\.nii\.gz: cannot be read \(Permission denied\)"):
        H.inspect_header(tmp_path / "a.nii.gz")
