"""Synthetic lesions (augmentation.lesions): where they go, how large and how dark they are,
and that a recipe, the cache and the sample pipeline carry them."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from flarecli.core.io.geometry import Geometry
from flarecli.core.labels import TUMOR
from flarecli.core.preprocessing.intensity import window
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.load import load_recipe
from flarecli.core.recipes.typed import RecipeError
from flarecli.core.training import data as D
from flarecli.core.training.augment.lesions import HOST_MARGIN, paint_lesions, sample_lesions
from flarecli.core.training.cache import preprocess_case

SPACING = (2.0, 1.0, 1.0)


def host_block(shape=(40, 80, 80), organ=1):
    """A float image of 0.5 everywhere, and a label with ``organ`` in a central block."""
    label = torch.zeros(shape, dtype=torch.long)
    z = slice(5, -5) if shape[0] > 1 else slice(None)
    label[z, 10:-10, 10:-10] = organ
    return torch.full((1, *shape), 0.5), label


def one(diameter, contrast, **extra):
    return S.SyntheticLesions(probability=1.0, count=(1, 1), diameter_mm=(diameter, diameter),
                              contrast_hu=(contrast, contrast), **extra)


def test_a_lesion_has_its_volume_and_contrast_and_stays_in_its_host():
    image, label = host_block()
    config = one(24.0, 40.0, darker=1.0, rim=0.0)
    volumes = []
    host = np.argwhere(label.numpy() == 1)
    middle = int(np.flatnonzero((host == [20, 40, 40]).all(1))[0])
    for seed in range(6):  # centred in the block, so that no lesion is cut
        (p,) = sample_lesions(np.random.default_rng(seed), config)
        p = dataclasses.replace(p, pick=(middle + 0.5) / len(host))
        lesions = [p]
        painted, out = paint_lesions(image, label, lesions, config, SPACING, 0.01)
        tumor = out == TUMOR
        assert tumor.any() and (label[tumor] == 1).all()  # only host voxels turn tumor
        assert torch.equal(out[~tumor], label[~tumor])
        changed = painted[0] != image[0]
        assert (label[changed] == 1).all()  # nothing outside the host is touched
        # the core (covered fully) is the host's value plus the contrast: 0.5 - 40 * 0.01
        assert torch.isclose(painted[0].min(), torch.tensor(0.1)), painted[0].min()
        assert painted[0].max() == 0.5
        assert p.contrast_hu == -40.0 and p.radii_mm[0] == pytest.approx(12.0)
        volumes.append(int(tumor.sum()) * math.prod(SPACING) /
                       (4 / 3 * math.pi * math.prod(p.radii_mm)))
    # the lobulated outline keeps the ellipsoid's volume on average (within a tenth each)
    assert all(0.85 < v < 1.15 for v in volumes), volumes
    assert abs(np.mean(volumes) - 1) < 0.06, volumes


def test_without_lobes_a_lesion_is_its_ellipsoid_shrunk_to_keep_host_around_it():
    image, label = host_block()
    config = one(30.0, 40.0, rim=0.0)
    host = np.argwhere(label.numpy() == 1)
    grid = np.argwhere(np.ones(label.shape, bool))
    outside = ~(label.numpy().ravel() == 1)
    shrunk = 0
    for seed in range(8):  # wherever it lands near the block's faces, it is shrunk or dropped
        (p,) = sample_lesions(np.random.default_rng(seed), config)
        p = dataclasses.replace(p, lobes=(0.0, 0.0, 0.0, 0.0))
        _, out = paint_lesions(image, label, [p], config, SPACING, 0.01)
        centre = host[int(p.pick * len(host))] * SPACING + np.array(p.offset_mm)
        d = grid * SPACING - centre
        u = math.cos(p.turn) * d[:, 1] + math.sin(p.turn) * d[:, 2]
        v = -math.sin(p.turn) * d[:, 1] + math.cos(p.turn) * d[:, 2]
        rho = np.sqrt((d[:, 0] / p.radii_mm[0]) ** 2 + (u / p.radii_mm[1]) ** 2 +
                      (v / p.radii_mm[2]) ** 2)
        scale = min(1.0, rho[outside].min() / HOST_MARGIN)
        shrunk += scale < 1
        if 2 * p.radii_mm[0] * scale < 30.0:
            assert not (out == TUMOR).any()  # smaller than the smallest diameter: dropped
            continue
        expected = (rho / scale <= 1).reshape(label.shape)
        assert np.array_equal((out == TUMOR).numpy(), expected)
        assert rho[outside].min() / scale >= HOST_MARGIN - 1e-6
    assert shrunk >= 2


def test_a_lesion_never_touches_its_hosts_border():
    image, label = host_block(shape=(60, 100, 100))
    # at least 20 mm across at 1 mm voxels: the margin (0.16 of a radius) exceeds a voxel
    config = S.SyntheticLesions(probability=1.0, count=(3, 3), diameter_mm=(20.0, 30.0))
    from scipy import ndimage

    border = ndimage.binary_dilation(label.numpy() != 1) & (label.numpy() == 1)
    painted = 0
    for seed in range(10):
        _, out = paint_lesions(image, label, sample_lesions(np.random.default_rng(seed), config),
                               config, (1.0, 1.0, 1.0), 0.01)
        tumor = (out == TUMOR).numpy()
        painted += tumor.any()
        assert not (tumor & border).any()
    assert painted >= 5


def test_brighter_lesions_rims_and_the_draws_are_as_configured():
    config = S.SyntheticLesions(probability=1.0, count=(2, 3), diameter_mm=(5.0, 80.0),
                                contrast_hu=(20.0, 60.0), darker=0.75, rim=0.5)
    rng = np.random.default_rng(0)
    drawn = [p for _ in range(400) for p in sample_lesions(rng, config)]
    counts = [len(sample_lesions(np.random.default_rng(s), config)) for s in range(200)]
    assert set(counts) == {2, 3}
    diameters = np.array([2 * p.radii_mm[0] for p in drawn])
    assert diameters.min() >= 5.0 and diameters.max() <= 80.0
    # log-uniform: half of the lesions below the geometric mean of the range (20 mm)
    assert abs(np.mean(diameters < 20.0) - 0.5) < 0.05
    dark = np.array([p.contrast_hu < 0 for p in drawn])
    assert abs(dark.mean() - 0.75) < 0.04
    assert all(20.0 <= abs(p.contrast_hu) <= 60.0 for p in drawn)
    rims = [p for p in drawn if p.rim_share > 0]
    assert all(p.contrast_hu < 0 and 2 * p.radii_mm[0] >= 20.0 for p in rims)
    big_dark = [p for p in drawn if p.contrast_hu < 0 and 2 * p.radii_mm[0] >= 20.0]
    assert abs(len(rims) / len(big_dark) - 0.5) < 0.08
    assert all(0.1 <= p.rim_share <= 0.2 and p.rim_hu == -p.contrast_hu for p in rims)


def test_a_rim_is_brighter_than_the_host_around_a_darker_body():
    image, label = host_block(shape=(50, 100, 100))  # 80 mm across: room for 40 mm
    config = one(40.0, 50.0, darker=1.0, rim=1.0)
    host = np.argwhere(label.numpy() == 1)
    middle = int(np.flatnonzero((host == [25, 50, 50]).all(1))[0])
    (p,) = sample_lesions(np.random.default_rng(3), config)
    lesions = [dataclasses.replace(p, pick=(middle + 0.5) / len(host))]
    assert p.rim_share > 0
    painted, out = paint_lesions(image, label, lesions, config, SPACING, 0.01)
    assert torch.isclose(painted[0].max(), torch.tensor(1.0))  # rim: 0.5 + 50 * 0.01
    assert torch.isclose(painted[0].min(), torch.tensor(0.0))  # body: 0.5 - 50 * 0.01
    assert (painted[0][painted[0] > 0.9] > 0).all() and (out[painted[0] > 0.9] == TUMOR).all()


def test_no_lesion_without_a_host_or_with_probability_zero():
    image, label = host_block(organ=3)  # spleen, not among the default hosts
    config = S.SyntheticLesions(probability=1.0)
    lesions = sample_lesions(np.random.default_rng(0), config)
    assert lesions
    assert paint_lesions(image, label, lesions, config, SPACING, 0.01) == (image, label)
    never = S.SyntheticLesions(probability=0.0)
    assert sample_lesions(np.random.default_rng(0), never) == []


def test_the_same_seed_paints_the_same_lesions_and_a_2d_slice_gets_cross_sections():
    image, label = host_block(shape=(1, 160, 160))
    config = one(20.0, 30.0)
    areas = set()
    for seed in range(12):
        a = paint_lesions(image, label, sample_lesions(np.random.default_rng(seed), config),
                          config, (5.0, 1.0, 1.0), 0.01)
        b = paint_lesions(image, label, sample_lesions(np.random.default_rng(seed), config),
                          config, (5.0, 1.0, 1.0), 0.01)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        areas.add(int((a[1] == TUMOR).sum()))
    # the centre lies off the slice by up to 0.6 radii: cross-sections of several sizes,
    # none larger than the widest (axes up to 1.25 radii, lobulated by up to 24 %)
    assert len(areas) >= 6  # (0 among them: a lesion too near the border is dropped)
    assert max(areas) <= math.pi * (10 * 1.25 * 1.24) ** 2


@pytest.mark.parametrize("bad, message", [
    ({"hosts": [14]}, "hosts"),
    ({"hosts": []}, "hosts"),
    ({"count": [0, 2]}, "count"),
    ({"diameter_mm": [30, 10]}, "diameter_mm"),
    ({"probability": 1.5}, "probability"),
])
def test_a_recipe_states_its_lesions_and_bad_values_name_the_field(bad, message):
    recipe = load_recipe("stmt", "cpu", [
        'stages.tumor.augmentation={"base": "none", "mirror": [], "lesions": {"hosts": [1, 2]}}'])
    lesions = recipe.stages["tumor"].augmentation.lesions
    assert lesions.hosts == (1, 2) and lesions.probability == S.SyntheticLesions.probability
    import json

    with pytest.raises(RecipeError, match=message):
        load_recipe("stmt", "cpu", [
            f'stages.tumor.augmentation.lesions={json.dumps(bad)}'])


def test_the_cache_records_spacing_and_hu_scale_and_samples_carry_lesions():
    shape = (20, 100, 100)  # zyx, 2.5 x 1 x 1 mm
    image = np.full(shape, 60.0, np.float32)
    label = np.zeros(shape, np.uint8)
    label[4:16, 10:90, 10:90] = 1
    geometry = Geometry(shape_zyx=shape, spacing_xyz=(1.0, 1.0, 2.5), origin_xyz=(0.0, 0.0, 0.0),
                        direction=tuple(np.eye(3).ravel()))
    stage = S.Stage(role="segment",
                    network=S.Network(arch="resunet", heads={"organs": (1,), "tumor": (14,)}),
                    geometry=S.StageGeometry(region="roi", spacing_zyx=(5.0, 2.0, 2.0),
                                             patch_zyx=(1, 24, 24), margin_mm=4.0,
                                             foreground_fraction=1.0),
                    augmentation=S.Augmentation(base="none", mirror=(),
                                                lesions=one(12.0, 40.0, darker=1.0)))
    intensity = window((-160.0, 240.0), (-1.0, 1.0))
    arrays = preprocess_case(image, label, geometry, intensity, stage)
    assert arrays["spacing"] == pytest.approx([5.0, 2.0, 2.0], rel=0.05)  # the stage's
    assert float(arrays["unit_per_hu"]) == pytest.approx(2 / 400)
    found = 0
    for seed in range(10):
        img, lab = D.make_sample(arrays, seed, stage.geometry, None, "cpu",
                                 lesions=stage.augmentation.lesions)
        if (lab == TUMOR).any():
            found += 1
            # 60 HU host, lesion core 40 HU darker: (20 + 160) / 200 - 1 = -0.1
            assert float(img.min()) == pytest.approx(-0.1, abs=2e-3)
        plain = D.make_sample(arrays, seed, stage.geometry, None, "cpu", train=False,
                              lesions=stage.augmentation.lesions)
        assert not (plain[1] == TUMOR).any()  # validation samples are never painted
    assert found >= 6  # every patch holds the host; a lesion too near its border is dropped


def test_a_small_host_is_as_likely_as_a_large_one():
    image, label = host_block(shape=(30, 100, 100))  # liver: a 40 x 80 x 80 mm block
    label[10:20, 40:60, 40:60] = 2  # a kidney inside it, 6 % of the voxels
    config = S.SyntheticLesions(probability=1.0, count=(1, 1), diameter_mm=(5.0, 8.0))
    hosts = []
    for seed in range(60):
        lesions = sample_lesions(np.random.default_rng(seed), config)
        _, out = paint_lesions(image, label, lesions, config, SPACING, 0.01)
        tumor = out == TUMOR
        if tumor.any():
            (host,) = torch.unique(label[tumor]).tolist()  # one organ per lesion
            hosts.append(host)
    assert len(hosts) >= 30  # (a lesion with no room in its organ is dropped)
    assert 0.3 < hosts.count(2) / len(hosts) < 0.7  # about half, not 4 %
