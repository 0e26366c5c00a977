"""flare stats: volumes, HU statistics and RECIST axes against shapes of known size, on
anisotropic, flipped and rotated grids."""

import json
import math

import numpy as np
import pytest

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume
from flarecli.core.quantification.stats import case_stats


def rotation_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def grid(shape_zyx, spacing_xyz, direction, centre_mm=(0.0, 0.0, 0.0)):
    """A geometry whose voxel centre of the middle index lies at ``centre_mm``."""
    d = np.asarray(direction, float).reshape(3, 3)
    mid = (np.array(shape_zyx[::-1]) - 1) / 2 * np.asarray(spacing_xyz)
    origin = np.asarray(centre_mm) - d @ mid
    return Geometry(tuple(shape_zyx), tuple(map(float, spacing_xyz)), tuple(origin),
                    tuple(d.ravel()))


def world(g: Geometry):
    idx = np.indices(g.shape_zyx).reshape(3, -1).T
    return g.index_to_physical(idx).reshape(*g.shape_zyx, 3)


def ellipsoid(points, centre, axes_mm, rotation_deg=0.0):
    """Inside an ellipsoid with semi-axes (a, b, c), a and b in the axial plane rotated by
    ``rotation_deg`` about the superior axis."""
    p = points - np.asarray(centre)
    r = rotation_z(-rotation_deg)[:2, :2]
    xy = p[..., :2] @ r.T
    a, b, c = axes_mm
    return (xy[..., 0] / a) ** 2 + (xy[..., 1] / b) ** 2 + (p[..., 2] / c) ** 2 <= 1


GRIDS = {
    "axis-aligned": ((60, 90, 90), (0.8, 0.8, 1.5), np.eye(3)),
    "anisotropic, flipped": ((30, 80, 100), (0.7, 0.9, 3.0), np.diag([-1, -1, 1])),
    "rotated 30 degrees": ((40, 90, 90), (0.8, 0.8, 2.0), rotation_z(30)),
    "tilted 10 degrees": ((45, 90, 90), (0.8, 0.8, 1.5),
                          np.array([[1, 0, 0], [0, math.cos(0.1745), -math.sin(0.1745)],
                                    [0, math.sin(0.1745), math.cos(0.1745)]])),
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_a_sphere_and_an_ellipsoid_measure_their_axes_on_any_grid(name):
    shape, spacing, direction = GRIDS[name]
    g = grid(shape, spacing, direction)
    pts = world(g)
    labels = np.zeros(shape, np.uint8)
    labels[ellipsoid(pts, (-14, 0, 0), (10, 10, 10))] = 14  # a sphere of 20 mm
    ell = ellipsoid(pts, (16, 2, 0), (12, 6, 8), rotation_deg=35)  # 24 x 12 mm in-plane
    labels[ell] = 14
    s = case_stats("c", labels, g, min_tumor_mm3=0)
    assert s.lesion_count == 2
    tol = max(spacing[:2]) + 1e-6  # one in-plane voxel spacing
    by_x = sorted(s.lesions, key=lambda lesion: lesion.centroid_mm[0])
    sphere, ell_lesion = by_x
    assert abs(sphere.long_axis_mm - 20) <= tol and abs(sphere.short_axis_mm - 20) <= tol
    assert abs(ell_lesion.long_axis_mm - 24) <= tol and abs(ell_lesion.short_axis_mm - 12) <= tol
    assert np.allclose(sphere.centroid_mm, (-14, 0, 0), atol=max(spacing) / 2)
    voxel_ml = g.voxel_volume_mm3 / 1000
    assert ell_lesion.voxels == int(ell.sum())
    assert ell_lesion.volume_ml == pytest.approx(ell.sum() * voxel_ml, abs=1e-4)
    assert s.tumor_burden_ml == pytest.approx((labels == 14).sum() * voxel_ml, abs=1e-3)
    assert s.sum_long_axes_mm == pytest.approx(sphere.long_axis_mm + ell_lesion.long_axis_mm)


def test_touching_lesions_are_one_and_separate_ones_two():
    g = grid((20, 40, 40), (1.0, 1.0, 1.0), np.eye(3))
    labels = np.zeros(g.shape_zyx, np.uint8)
    labels[5:10, 5:10, 5:10] = 14
    labels[10:15, 10:15, 10:15] = 14  # touches the first at one corner (26-connectivity)
    assert case_stats("c", labels, g, min_tumor_mm3=0).lesion_count == 1
    labels[10:15, 10:15, 10:15] = 0
    labels[10:15, 12:17, 12:17] = 14  # one voxel apart
    assert case_stats("c", labels, g, min_tumor_mm3=0).lesion_count == 2
    # a lesion below --min-tumor-mm3 is not counted
    labels[0, 0, 0] = 14
    assert case_stats("c", labels, g, min_tumor_mm3=2).lesion_count == 2
    assert case_stats("c", labels, g, min_tumor_mm3=0).lesion_count == 3


def test_volumes_hu_and_the_organ_a_lesion_lies_in():
    g = grid((10, 20, 20), (0.5, 0.5, 2.0), np.eye(3))
    labels = np.zeros(g.shape_zyx, np.uint8)
    image = np.full(g.shape_zyx, -1000, np.int16)
    labels[2:8, 2:18, 2:18] = 1
    image[2:8, 2:18, 2:18] = np.arange(6 * 16 * 16).reshape(6, 16, 16) % 100  # 0..99
    labels[4:6, 8:12, 8:12] = 14  # inside the liver
    labels[0, 0:3, 0:3] = 3  # spleen, away from it
    s = case_stats("c", labels, g, image, min_tumor_mm3=0)
    liver = s.classes[1]
    values = image[labels == 1].astype(float)
    assert liver.voxels == int((labels == 1).sum())
    assert liver.volume_ml == pytest.approx(liver.voxels * 0.5 * 0.5 * 2 / 1000)
    assert liver.hu_mean == pytest.approx(values.mean(), abs=0.01)
    assert liver.hu_median == pytest.approx(np.median(values), abs=0.01)
    assert liver.hu_p5 == pytest.approx(np.percentile(values, 5), abs=0.01)
    assert s.lesions[0].organ == 1 and s.lesions[0].to_json()["organ_name"] == "liver"
    assert s.classes[3].hu_mean == -1000 and s.classes[3].hu_std == 0
    assert 2 not in s.classes


def test_the_command_writes_json_and_csv_and_reports_bad_cases(tmp_path, run_cli):
    g = grid((10, 20, 20), (1.0, 1.0, 2.0), np.eye(3))
    labels = np.zeros(g.shape_zyx, np.uint8)
    labels[2:8, 2:18, 2:18] = 1
    labels[4:6, 8:14, 8:12] = 14
    for case in ("a", "b"):
        write_volume(tmp_path / "labels" / f"{case}.nii.gz", labels, g)
        write_volume(tmp_path / "images" / f"{case}_0000.nii.gz",
                     np.full(g.shape_zyx, 40, np.int16), g)
    (tmp_path / "labels" / "broken.nii.gz").write_bytes(b"not a nifti")
    res = run_cli("stats", tmp_path / "labels", "--images", tmp_path / "images",
                  "--json", tmp_path / "s.json", "--csv", tmp_path / "s.csv",
                  "--min-tumor-mm3", "0")
    assert res.code == 4 and "broken" in res.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["schema_version"] == 1 and [c["id"] for c in data["cases"]] == ["a", "b"]
    case = data["cases"][0]
    assert case["classes"]["1"]["hu_mean"] == 40 and case["lesion_count"] == 1
    lesion = case["lesions"][0]
    expected = case_stats("a", labels, g, min_tumor_mm3=0).lesions[0]
    assert lesion["long_axis_mm"] == expected.long_axis_mm  # the 6 x 4 mm box's diagonal
    assert abs(lesion["long_axis_mm"] - math.hypot(6, 4)) <= 1
    assert lesion["organ"] == 1 and case["tumor_burden_ml"] == pytest.approx(48 * 2 / 1000)
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].startswith("case,label,name,voxels,volume_ml,hu_mean") and len(rows) == 5
    # an output onto an input is refused before any work
    res = run_cli("stats", tmp_path / "labels", "--csv", tmp_path / "labels" / "a.nii.gz")
    assert res.code == 3


def test_infer_stats_describes_its_outputs(tmp_path, run_cli, tiny_model):
    data = tiny_model / "data"
    res = run_cli("infer", data / "imagesTr", tmp_path / "out", "--model",
                  tiny_model / "model", "--backend", "torch", "--stats", tmp_path / "s.json")
    assert res.code == 0, res.stderr
    written = json.loads((tmp_path / "s.json").read_text())
    assert [c["id"] for c in written["cases"]] == ["b0", "b1"]
    from flarecli.core.io.nifti import read_volume

    labels, g = read_volume(tmp_path / "out" / "b0.nii.gz")
    image, _ = read_volume(data / "imagesTr" / "b0_0000.nii.gz")
    expected = case_stats("b0", labels, g, image).to_json()
    assert written["cases"][0] == expected
