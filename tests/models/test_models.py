import pytest
import torch

from flarecli.models import PRESETS, build_model, count_parameters, preset


def build(name, **kw):
    p = preset(name)
    return build_model(p.pop("arch"), num_classes=14, **{**p, **kw})


def test_student_matches_the_paper_size():
    # StMt's student: base 16 channels, 5 down/up samplings, 6.66 M parameters
    m = build("student")
    assert m.channels[0] == 16 and len(m.channels) == 6
    assert 6.0e6 < count_parameters(m) < 7.0e6
    assert count_parameters(build("teacher")) > 4 * count_parameters(m)


def test_forward_shapes_and_deep_supervision():
    torch.manual_seed(0)
    m = build("tiny", deep_supervision=True)
    x = torch.randn(2, 1, 16, 24, 32)
    outs = m(x)
    assert [tuple(o.shape) for o in outs] == [(2, 14, 16, 24, 32), (2, 14, 8, 12, 16)]
    m.eval()
    with torch.no_grad():
        assert tuple(m(x).shape) == (2, 14, 16, 24, 32)


def test_anisotropic_strides():
    m = build_model("resunet", base_channels=4, n_down=2, strides=[(1, 2, 2), 2], num_classes=3)
    assert m.divisor() == (2, 4, 4)
    assert tuple(m(torch.randn(1, 1, 6, 8, 8)).shape) == (1, 3, 6, 8, 8)


def test_registry_errors_are_helpful():
    with pytest.raises(ValueError, match="did you mean 'resunet'"):
        build_model("resunt")
    with pytest.raises(ValueError, match="did you mean 'student'"):
        preset("studnt")
    with pytest.raises(ValueError, match="bad arguments"):
        build_model("resunet", colour=3)
    assert set(PRESETS) >= {"student", "teacher", "tiny"}
