import pytest
import torch

from flarecli.models.build import PRESETS, build_model, count_parameters, preset


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


def test_named_heads_split_levels_and_2d():
    torch.manual_seed(0)
    m = build_model("resunet", base_channels=4, n_down=2, dims=2, block="plain",
                    heads={"organs": 14, "tumor": 2}, split_levels=2, deep_supervision=True)
    out = m(torch.randn(2, 1, 16, 16))
    assert {k: [tuple(o.shape) for o in v] for k, v in out.items()} == {
        "organs": [(2, 14, 16, 16), (2, 14, 8, 8)], "tumor": [(2, 2, 16, 16), (2, 2, 8, 8)]}
    assert all(isinstance(mod, torch.nn.Conv2d) for mod in m.modules()
               if isinstance(mod, torch.nn.Conv2d | torch.nn.Conv3d))
    # each head's own decoder levels live under its prefix; the encoder is shared
    names = [n for n, _ in m.named_parameters()]
    assert any(n.startswith("branches.tumor.levels.1.") for n in names)
    assert not any(n.startswith("branches.tumor.levels.2.") for n in names)
    m.eval()
    with torch.no_grad():
        assert {k: tuple(v.shape) for k, v in m(torch.randn(1, 1, 8, 8)).items()} == {
            "organs": (1, 14, 8, 8), "tumor": (1, 2, 8, 8)}


def test_one_named_head_keeps_the_classic_parameter_names():
    classic = build("tiny")
    named = build_model("resunet", **{k: v for k, v in preset("tiny").items() if k != "arch"},
                        heads={"organs": 14})
    assert list(classic.state_dict()) == list(named.state_dict())
    named.load_state_dict(classic.state_dict())
    named.eval()
    classic.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(named(x)["organs"], classic(x))


def test_he_normal_initialisation():
    from flarecli.models import as_heads
    from flarecli.models.build import initialise

    m = build("tiny")
    initialise(m, "he_normal")
    w = m.stem[0].weight.detach()
    fan_in = w[0].numel()
    assert abs(float(w.std()) - (2 / (1 + 0.01**2) / fan_in) ** 0.5) < 0.05
    with pytest.raises(ValueError, match="initialisation"):
        initialise(m, "xavier")
    assert as_heads(torch.zeros(1), ["a"])["a"].shape == (1,)
