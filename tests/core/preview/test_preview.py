"""flare preview: the PNG's planes, colours, tumor outline and aspect, on any storage."""

import numpy as np
import pytest
from PIL import Image

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume
from flarecli.core.preview.render import ALPHA, COLOURS, TUMOR_OUTLINE, _window, render
from tests.conftest import geom


def phantom():
    """Canonical (S, P, L) arrays: a liver block on the patient's right, a spleen on the
    left, a tumor inside the liver; CT 40 HU everywhere (grey 127.5 in the window)."""
    shape = (20, 40, 60)
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 10:30, 5:25] = 1  # right side: low canonical x (x grows to the left)
    labels[5:15, 10:30, 40:55] = 3
    labels[9:12, 18:22, 12:16] = 14
    image = np.full(shape, 40, np.int16)
    return image, labels


def expected(c, grey):
    return (1 - ALPHA) * grey + ALPHA * np.array(COLOURS[c])


def check(picture, panels, labels):
    rgb = np.asarray(picture).astype(float)
    grey = float(_window(np.array([40]))[0])
    axial = panels[0]
    assert axial.name == "axial"
    for voxel, c in (((10, 12, 8), 1), ((10, 12, 48), 3)):
        x, y = axial.pixel(voxel)
        assert np.abs(rgb[y, x] - expected(c, grey)).max() <= 2, (voxel, c, rgb[y, x])
    x_liver, _ = axial.pixel((10, 12, 8))
    x_spleen, _ = axial.pixel((10, 12, 48))
    assert x_liver < x_spleen  # the patient's right is on the image's left
    # the tumor: outlined in yellow, filled with its colour inside
    outline = np.all(rgb == TUMOR_OUTLINE, axis=-1)
    assert outline[axial.top:axial.top + axial.height, axial.left:axial.left + axial.width].any()
    # background away from labels is the windowed grey
    x, y = axial.pixel((10, 34, 33))  # clear of the labels and the orientation letters
    assert np.abs(rgb[y, x] - grey).max() <= 1


def test_colours_at_known_positions_and_aspect_from_the_spacing():
    image, labels = phantom()
    g = geom(labels.shape, spacing_xyz=(0.8, 0.8, 3.0))  # identity direction = canonical
    picture, panels = render(image, labels, g)
    check(picture, panels, labels)
    coronal = panels[1]
    # coronal: 60 columns x 0.8 mm = 48 mm wide, 20 rows x 3 mm = 60 mm high
    assert coronal.height > coronal.width
    assert coronal.width / coronal.height == pytest.approx(48 / 60, abs=0.02)
    x_top, y_top = coronal.pixel((14, 20, 10))
    x_bottom, y_bottom = coronal.pixel((5, 20, 10))
    assert y_top < y_bottom  # superior is up


def test_another_storage_order_draws_the_same_picture():
    image, labels = phantom()
    g = geom(labels.shape, spacing_xyz=(0.8, 0.8, 3.0))
    reference, _ = render(image, labels, g)
    # the same anatomy stored RAS with reversed slices: flip x, y and z of the arrays
    flipped = Geometry(g.shape_zyx, g.spacing_xyz, g.origin_xyz,
                       (-1.0, 0, 0, 0, -1.0, 0, 0, 0, -1.0))
    picture, _ = render(image[::-1, ::-1, ::-1], labels[::-1, ::-1, ::-1], flipped)
    assert np.array_equal(np.asarray(reference), np.asarray(picture))


def test_the_command_writes_pngs_and_reports_a_bad_case(tmp_path, run_cli):
    image, labels = phantom()
    g = geom(labels.shape, spacing_xyz=(0.8, 0.8, 3.0))
    write_volume(tmp_path / "labels" / "a.nii.gz", labels, g)
    write_volume(tmp_path / "images" / "a_0000.nii.gz", image, g)
    write_volume(tmp_path / "labels" / "b.nii.gz", labels, g)
    write_volume(tmp_path / "images" / "b_0000.nii.gz", image[:, :, :50],
                 geom((20, 40, 50), spacing_xyz=(0.8, 0.8, 3.0)))
    res = run_cli("preview", tmp_path / "labels", tmp_path / "images", tmp_path / "png")
    assert res.code == 4 and "b" in res.stderr and "label vs image" in res.stderr
    picture = Image.open(tmp_path / "png" / "a.png")
    assert picture.format == "PNG" and picture.mode == "RGB"
    _, panels = render(image, labels, g)
    check(picture.convert("RGB"), panels, labels)


def test_the_palette_keeps_every_pair_of_classes_apart():
    from itertools import combinations

    from skimage.color import rgb2lab

    lab = {c: rgb2lab(np.array(rgb, float)[None, None] / 255)[0, 0] for c, rgb in COLOURS.items()}
    assert set(COLOURS) == set(range(1, 15))
    closest = min(float(np.linalg.norm(lab[a] - lab[b])) for a, b in combinations(lab, 2))
    # the old palette: tumor/left adrenal 28.3, liver/stomach 28.4 CIELAB units
    assert closest >= 35
    grey = rgb2lab(np.full((1, 1, 3), 0.5))[0, 0]
    assert all(np.linalg.norm(v - grey) >= 30 for v in lab.values())


def test_a_few_slices_draw_short_planes_at_one_scale_with_room_for_their_letters():
    # 20 slices of 2 mm under a 300 x 300 mm axial plane: a 40 mm band
    shape = (20, 100, 100)
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 30:70, 20:40] = 1
    image = np.full(shape, 40, np.int16)
    g = geom(shape, spacing_xyz=(3.0, 3.0, 2.0))
    picture, panels = render(image, labels, g, size=300)
    axial, coronal, sagittal = panels
    assert axial.width == axial.height == 300  # the longest side at the size asked for
    assert coronal.width == 300 and coronal.height == 40  # the same mm -> pixel scale
    assert sagittal.height == coronal.height
    from flarecli.core.preview.render import MIN_HEIGHT, TITLE

    # titles above the planes, thin planes padded: nothing drawn over their first rows
    assert min(p.top for p in panels) >= TITLE
    assert coronal.top >= TITLE + (MIN_HEIGHT - coronal.height) // 2
    assert picture.height >= TITLE + MIN_HEIGHT
    rgb = np.asarray(picture)
    x, y = coronal.pixel((10, 50, 30))
    assert np.abs(rgb[y, x] - expected(1, float(_window(np.array([40]))[0]))).max() <= 2


def test_the_default_picture_is_larger_than_it_was():
    image, labels = phantom()
    picture, panels = render(image, labels, geom(labels.shape, spacing_xyz=(0.8, 0.8, 3.0)))
    assert max(max(p.width, p.height) for p in panels) == 400
