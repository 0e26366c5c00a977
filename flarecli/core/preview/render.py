"""One PNG per case for a glance: axial, coronal and sagittal planes through the organs'
centre, the CT in a soft-tissue window, the labels as a colour overlay with a legend, tumors
outlined, orientation letters at the edges.

Drawn with Pillow (already installed with scikit-image; small, well kept, and enough for
raster overlays and text -- matplotlib would add a plotting stack for three images). Planes
are taken in the canonical orientation (superior, posterior, left), so any storage order
shows the same picture, and displayed radiologically: the patient's right on the image's
left, anterior up in the axial plane, superior up in the others. Each plane is resampled to
square pixels from the spacing (labels by nearest neighbour), so anatomy keeps its aspect, and
all three at one scale (``size`` pixels for the scan's longest side in mm), so that a 20-slice
series draws its coronal and sagittal planes as the short bands they are -- padded to
``MIN_HEIGHT`` so that their letters fit. Titles sit in a strip above the planes, clear of
the orientation letters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flarecli.core.io.geometry import Geometry
from flarecli.core.labels import LABELS, TUMOR

#: Soft-tissue window (level 40, width 400 HU).
WINDOW = (-160.0, 240.0)
ALPHA = 0.45
SIZE = 400  # default pixels for the scan's longest physical side (was 256: too small)
MIN_HEIGHT = 64  # a plane thinner than this is padded (a 20-slice series' coronal plane)
TITLE = 14  # the strip above the planes that holds their names
TUMOR_OUTLINE = (255, 255, 255)

#: One colour per FLARE class (1-14): saturated, clear of grey, and at least 38 CIELAB
#: units from each other (picked greedily for the largest smallest distance; the earlier
#: palette had tumor/left adrenal, liver/stomach at 28 and IVC/gallbladder looking alike).
#: Neighbours get different hues (spleen blue, left kidney green like the right one).
COLOURS: dict[int, tuple[int, int, int]] = {
    1: (224, 64, 64), 2: (0, 224, 0), 3: (0, 64, 224), 4: (0, 224, 160),
    5: (224, 0, 128), 6: (0, 192, 224), 7: (224, 0, 224), 8: (128, 96, 0),
    9: (32, 96, 32), 10: (0, 128, 224), 11: (192, 128, 192), 12: (224, 192, 128),
    13: (128, 192, 64), 14: (224, 192, 32),
}

#: Plane -> (canonical axis cut, (row axis, flip rows), (column axis, flip columns),
#: letters top, bottom, left, right).
PLANES = {
    "axial": (0, (1, False), (2, False), "A", "P", "R", "L"),
    "coronal": (1, (0, True), (2, False), "S", "I", "R", "L"),
    "sagittal": (2, (0, True), (1, False), "S", "I", "A", "P"),
}


@dataclass
class Panel:
    """Where a plane landed in the picture: its box and the voxel -> pixel mapping."""

    name: str
    left: int
    top: int
    width: int
    height: int
    cut: int  # the canonical index of the plane
    rows: tuple[int, bool, int]  # canonical axis, flipped, voxels
    cols: tuple[int, bool, int]

    def pixel(self, index_zyx) -> tuple[int, int]:
        """(x, y) in the picture of the centre of a canonical voxel of this plane."""
        def along(axis, flipped, n, size):
            i = index_zyx[axis]
            i = n - 1 - i if flipped else i
            return int((i + 0.5) * size / n)
        return (self.left + along(*self.cols, self.width),
                self.top + along(*self.rows, self.height))


def _window(ct: np.ndarray) -> np.ndarray:
    lo, hi = WINDOW
    return (np.clip((ct.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def render(image: np.ndarray, labels: np.ndarray, geometry: Geometry, size: int = SIZE):
    """(the picture as a PIL RGB image, its panels) of a CT and its labels on one grid;
    ``size``: pixels for the scan's longest side in mm (every plane at that one scale)."""
    from PIL import Image, ImageDraw, ImageFont

    from flarecli.core.preprocessing.orientation import to_canonical

    r = to_canonical(geometry.direction)
    ct, lab = r.apply(image), r.apply(labels)
    spacing = r.spacing(geometry.spacing_zyx)
    fg = np.argwhere(lab > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.array(lab.shape) // 2
    font = ImageFont.load_default()
    extent_mm = [n * s for n, s in zip(lab.shape, spacing, strict=True)]
    scale = size / max(extent_mm)  # pixels per mm, the same for the three planes
    pictures, panels = [], []
    left = 0
    for name, (cut, (ra, rflip), (ca, cflip), top, bottom, lft, rgt) in PLANES.items():
        index = [slice(None)] * 3
        index[cut] = int(centre[cut])
        order = sorted([ra, ca])
        plane_ct, plane_lab = ct[tuple(index)], lab[tuple(index)]
        if order != [ra, ca]:  # rows must come first
            plane_ct, plane_lab = plane_ct.T, plane_lab.T
        if rflip:
            plane_ct, plane_lab = plane_ct[::-1], plane_lab[::-1]
        if cflip:
            plane_ct, plane_lab = plane_ct[:, ::-1], plane_lab[:, ::-1]
        h_mm, w_mm = plane_ct.shape[0] * spacing[ra], plane_ct.shape[1] * spacing[ca]
        shape = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        grey = Image.fromarray(np.ascontiguousarray(_window(plane_ct))).resize(
            shape, Image.BILINEAR)
        ids = np.asarray(Image.fromarray(np.ascontiguousarray(plane_lab)).resize(
            shape, Image.NEAREST))
        rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2).astype(np.float32)
        palette = np.zeros((256, 3), np.float32)
        for c, colour in COLOURS.items():
            palette[c] = colour
        mask = (ids > 0)[..., None]
        rgb = np.where(mask, (1 - ALPHA) * rgb + ALPHA * palette[ids], rgb)
        rgb[_outline(ids == TUMOR)] = TUMOR_OUTLINE
        w, h = shape
        pictures.append((Image.fromarray(rgb.round().astype(np.uint8)), (top, bottom, lft, rgt)))
        pad = max(0, MIN_HEIGHT - h) // 2  # a thin plane sits centred in MIN_HEIGHT
        panels.append(Panel(name, left, TITLE + pad, w, h, int(centre[cut]),
                            (ra, rflip, lab.shape[ra]), (ca, cflip, lab.shape[ca])))
        left += max(w, 60) + 6  # room for the title over a narrow plane
    present = [int(c) for c in np.unique(lab) if c > 0]
    legend_w = 130
    height = max(TITLE + max(max(p.height, MIN_HEIGHT) for p in panels),
                 14 * len(present) + 8)
    canvas = Image.new("RGB", (left + legend_w, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for p, (img, (top, bottom, lft, rgt)) in zip(panels, pictures, strict=True):
        canvas.paste(img, (p.left, p.top))
        draw.text((p.left + 2, 1), p.name, fill=(200, 200, 200), font=font)
        # on a plane too thin for two letters one above the other, S and I go in its padding
        inside = p.height >= 28
        ys = (p.top + 2, p.top + p.height - 12) if inside else (p.top - 12, p.top + p.height + 1)
        mid_x, mid_y = p.left + p.width // 2 - 3, p.top + p.height // 2 - 6
        for text, xy in ((top, (mid_x, ys[0])), (bottom, (mid_x, ys[1])),
                         (lft, (p.left + 2, mid_y)), (rgt, (p.left + p.width - 9, mid_y))):
            draw.text(xy, text, fill=(255, 255, 255), font=font)
    for k, c in enumerate(present):
        y = 4 + 14 * k
        draw.rectangle((left + 4, y + 1, left + 14, y + 11), fill=COLOURS.get(c, (255, 255, 255)),
                       outline=TUMOR_OUTLINE if c == TUMOR else None)
        draw.text((left + 18, y), LABELS.get(c, str(c)), fill=(255, 255, 255), font=font)
    return canvas, panels


def write_preview(path, image: np.ndarray, labels: np.ndarray, geometry: Geometry,
                  size: int = SIZE) -> None:
    """Render and write one PNG, atomically (``size``: as :func:`render`)."""
    from pathlib import Path

    from flarecli.core.io.files import atomic_path

    picture, _ = render(image, labels, geometry, size)
    with atomic_path(Path(path)) as tmp:
        picture.save(tmp, format="PNG")


def preview_case(job: tuple, size: int = SIZE) -> str | None:
    """Render one case ``(case, label path, image path, png path, DICOM series uid or
    None[, size])``; the problem, or None."""
    from flarecli.core.errors import FlareError
    from flarecli.core.io.cases import read_labelled_scan

    _, label_path, image_path, target, series = job[:5]
    size = job[5] if len(job) > 5 else size
    try:
        labels, geometry, image = read_labelled_scan(label_path, image_path, series)
        write_preview(target, image, labels, geometry, size)
        return None
    except FlareError as e:
        return str(e)
