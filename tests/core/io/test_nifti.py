import numpy as np
import pytest

from flarecli.core.errors import DataError, InputError
from flarecli.core.io.nifti import read_header, read_volume, write_volume
from tests.conftest import geom

FLIPPED = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_keeps_values_and_geometry_exactly(tmp_path, suffix):
    g = geom((7, 9, 11), spacing_xyz=(0.75, 0.8125, 3.5), origin=(-120.5, 88.25, -400.0),
             direction=FLIPPED)
    a = np.arange(np.prod(g.shape_zyx), dtype=np.int16).reshape(g.shape_zyx) - 500
    write_volume(tmp_path / f"a{suffix}", a, g)
    b, g2 = read_volume(tmp_path / f"a{suffix}")
    assert b.dtype == np.int16 and np.array_equal(a, b)
    # these values are exact in float32, so the NIfTI header keeps them exactly
    assert g2 == g
    assert read_header(tmp_path / f"a{suffix}") == g2
    # and a second generation is bit-identical in geometry
    write_volume(tmp_path / f"b{suffix}", b, g2)
    assert read_volume(tmp_path / f"b{suffix}")[1] == g2


def test_round_trip_arbitrary_float_geometry_is_stable(tmp_path):
    g = geom((3, 4, 5), spacing_xyz=(0.7, 0.81, 2.53), origin=(10.1, -20.2, 30.3),
             direction=(1, 0, 0, 0, -1, 0, 0, 0, -1))
    write_volume(tmp_path / "a.nii.gz", np.zeros(g.shape_zyx, np.uint8), g)
    _, g1 = read_volume(tmp_path / "a.nii.gz")
    assert np.allclose(g1.spacing_xyz, g.spacing_xyz, atol=1e-6)
    assert np.allclose(g1.origin_xyz, g.origin_xyz, atol=1e-5)
    assert g1.direction == g.direction
    write_volume(tmp_path / "b.nii.gz", np.zeros(g.shape_zyx, np.uint8), g1)
    assert read_volume(tmp_path / "b.nii.gz")[1] == g1


def test_array_axis_convention_matches_physical_points(tmp_path):
    g = geom((4, 5, 6), spacing_xyz=(2.0, 3.0, 5.0), origin=(10.0, 20.0, 30.0), direction=FLIPPED)
    # voxel [k=3, j=0, i=1] -> x = 10 - 1*2, y = 20 - 0, z = 30 + 3*5
    assert np.allclose(g.index_to_physical(np.array([[3, 0, 1]])), [[8.0, 20.0, 45.0]])
    assert g.spacing_zyx == (5.0, 3.0, 2.0)
    assert g.orientation == "RAS"
    assert geom().orientation == "LPS"
    assert g.superior_axis() == 0
    # a scan stored with voxel axis 0 along superior-inferior: array axis 2
    sagittal = geom(direction=(0, 0, 1, 1, 0, 0, 0, 1, 0))
    assert sagittal.superior_axis() == 1




def test_read_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a NIfTI"):
        read_volume(tmp_path / "notes.txt")
    write_volume(tmp_path / "ok.nii.gz", np.ones((20, 20, 20), np.int16), geom((20, 20, 20)))
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: (unreadable|truncated)"):
        read_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty.nii.gz"):
        read_volume(tmp_path / "empty.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.999])
def test_truncated_files_are_detected_although_itk_zero_fills_them(tmp_path, suffix, keep):
    rng = np.random.default_rng(1)
    write_volume(tmp_path / f"ok{suffix}", rng.integers(-999, 999, (20, 20, 20), dtype=np.int16),
                 geom((20, 20, 20)))
    data = (tmp_path / f"ok{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match=f"cut{suffix}: (truncated|unreadable)"):
        read_volume(tmp_path / f"cut{suffix}")


def test_multi_member_gzip_is_complete(tmp_path):
    import gzip

    write_volume(tmp_path / "a.nii", np.arange(1000, dtype=np.int16).reshape(10, 10, 10),
                 geom((10, 10, 10)))
    raw = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    a, _ = read_volume(tmp_path / "b.nii.gz")
    assert a.ravel()[-1] == 999


def test_2d_image_is_rejected(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match="2-D, expected 3-D"):
        read_volume(tmp_path / "flat.nii.gz")




def test_write_rejects_shape_mismatch(tmp_path):
    with pytest.raises(InputError, match="does not match grid"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.uint8), geom())




def test_real_ct_geometry(shared_ct):
    image, label = shared_ct
    a, g = read_volume(image)
    assert a.shape == (112, 101, 122) and g.spacing_xyz == (3.0, 3.0, 3.0)
    assert g.orientation == "RAS"
    _, gl = read_volume(label)
    assert g.mismatches(gl) == []


