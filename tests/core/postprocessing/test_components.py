import numpy as np
import pytest

from flarecli.core.errors import InputError
from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.postprocessing.components import postprocess
from tests.conftest import geom


def test_largest_component_kept_islands_removed():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:10, 2:10, 2:10] = 1  # liver, 512 voxels
    lab[15:17, 15:17, 15:17] = 1  # island, 8 voxels
    lab[12, 2, 2] = 1  # single voxel
    lab[2:6, 14:18, 2:6] = 3  # spleen, one piece
    out, removed = postprocess(lab, 1.0)
    assert (out == 1).sum() == 512 and removed == {1: 9}
    assert (out == 3).sum() == 64
    assert out[15, 15, 15] == 0 and lab[15, 15, 15] == 1  # the input is untouched


def test_connectivity_option():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:5, 2:5, 2:5] = 2
    lab[5, 5, 5] = 2  # touches the cube only by a corner
    assert postprocess(lab, 1.0, connectivity=26)[1] == {}
    assert postprocess(lab, 1.0, connectivity=6)[1] == {2: 1}
    with pytest.raises(InputError, match="choose 6, 18 or 26"):
        postprocess(lab, 1.0, connectivity=8)


def test_tumor_threshold_respects_spacing():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:7, 2:7, 2:7] = 14  # 125 voxels
    lab[20:22, 20:22, 20:22] = 14  # 8 voxels
    # 1 mm^3 voxels: 8 mm^3 < 100 -> removed; 125 kept
    out, removed = postprocess(lab, 1.0, min_tumor_mm3=100)
    assert removed == {14: 8} and (out == 14).sum() == 125
    # 0.8 x 0.8 x 2.5 = 1.6 mm^3 voxels: the small one is 12.8 mm^3, the big one 200 mm^3
    out, removed = postprocess(lab, 1.6, min_tumor_mm3=150)
    assert removed == {14: 8}
    # 20 mm^3 voxels: both are big enough
    assert postprocess(lab, 20.0, min_tumor_mm3=150)[1] == {}
    # several tumors above the size are all kept (not only the largest)
    lab[10:15, 10:15, 10:15] = 14
    assert (postprocess(lab, 1.0)[0] == 14).sum() == 250


def test_cli_postprocess(tmp_path, run_cli):
    g = geom((20, 20, 20), spacing_xyz=(0.8, 0.8, 2.5), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    lab = np.zeros(g.shape_zyx, np.int16)
    lab[2:10, 2:10, 2:10] = 1
    lab[15:17, 15:17, 15:17] = 1
    write_volume(tmp_path / "in" / "a.nii.gz", lab, g)
    write_volume(tmp_path / "in" / "b.nii.gz", lab * 20, g)  # labels outside 0..14
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    assert res.code == 4 and "error: b: b.nii.gz: label values outside 0..14: 20" in res.stderr
    out, g2 = read_volume(tmp_path / "out" / "a.nii.gz")
    assert out.dtype == np.uint8 and g2.mismatches(g) == [] and (out == 1).sum() == 512
    assert not (tmp_path / "out" / "b.nii.gz").exists()
    # resume: existing outputs are skipped, --overwrite redoes them
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "out")
    assert "skipped 1 existing" in res.stdout
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "in")
    assert res.code == 3 and "output folder is the input folder" in res.stderr
    res = run_cli("postprocess", tmp_path / "in", tmp_path / "o2", "--connectivity", "4")
    assert res.code == 3


def test_near_keeps_voxels_within_the_margin_in_millimetres():
    from flarecli.core.postprocessing.components import near

    hosts = np.zeros((10, 40, 40), bool)
    hosts[:, :, :10] = True  # a host filling x < 10
    mask = np.zeros_like(hosts)
    mask[5, 20, 8:30] = True  # one component running from inside the host outwards
    mask[5, 30, 30:33] = True  # another far away
    # 2 mm voxels along x: x = 10..14 lie within 10 mm of the host's last column (x = 9)
    kept = near(mask, hosts, (3.0, 1.0, 2.0), 10.0)
    assert set(np.flatnonzero(kept[5, 20])) == set(range(8, 15))
    assert not kept[5, 30].any()
    assert not (kept & ~mask).any()
    inside = near(mask, hosts, (3.0, 1.0, 2.0), 0.0)
    assert set(np.flatnonzero(inside[5, 20])) == {8, 9}
    assert not near(mask, np.zeros_like(hosts), (1.0, 1.0, 1.0), 50.0).any()
