"""The scan grid: its comparison and the axis convention."""


from flarecli.core.io.geometry import Geometry
from tests.conftest import geom
from tests.core.io.test_nifti import FLIPPED


def test_geometry_mismatches_are_named():
    a = geom()
    assert a.mismatches(a) == []
    b = Geometry(a.shape_zyx, (1.0, 1.0, 2.0), a.origin_xyz, a.direction)
    assert any("spacing" in m for m in a.mismatches(b))
    c = Geometry((8, 10, 13), a.spacing_xyz, (0.0, 0.5, 0.0), FLIPPED)
    kinds = " ".join(a.mismatches(c))
    assert "shape" in kinds and "origin" in kinds and "direction" in kinds
    # float32 noise in the header is not a mismatch
    d = Geometry(a.shape_zyx, (1.00000003, 1.0, 1.0), (1e-5, 0.0, 0.0), a.direction)
    assert a.mismatches(d) == []
