"""Organ and lesion statistics of a label map: what a clinician reads off a segmentation.

Per class: voxels, volume (ml) and, with the CT, HU mean / standard deviation / median / 5th
and 95th percentile. Per tumor lesion -- one connected component of class 14
(26-connectivity, so two touching lesions are one), of at least ``min_tumor_mm3`` -- its
volume, centroid in world millimetres (LPS, the scanner's patient coordinates), RECIST 1.1's
long axis (the longest diameter in an axial plane, on the plane where it is longest) and
short axis (on that plane, the longest extent perpendicular to the long axis), and the organ
it lies in or touches most. Per case: lesion count, tumor burden (ml) and the sum of the
long axes.

Everything is measured in world millimetres, so a flipped, oblique or anisotropic grid gives
the same numbers as an axis-aligned one: "axial" is the patient's axial plane (perpendicular
to the superior axis, world z), not a slice of the voxel grid. Voxel centres are grouped into
axial planes one slice thickness apart (the voxel's extent along world z); diameters are
measured between voxel centres plus half a voxel's extent along the measured direction
(centres lie inside the lesion, so their distance falls short of its edges by up to about a
voxel), which keeps them within one spacing of the true axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from flarecli.core.io.geometry import Geometry
from flarecli.core.labels import MAX_LABEL, MIN_TUMOR_MM3, ORGANS, TUMOR, label_name
from flarecli.core.preprocessing.boxes import label_counts

SCHEMA_VERSION = 1
HU_FIELDS = ("hu_mean", "hu_std", "hu_median", "hu_p5", "hu_p95")


@dataclass
class ClassStats:
    voxels: int
    volume_ml: float
    hu_mean: float | None = None
    hu_std: float | None = None
    hu_median: float | None = None
    hu_p5: float | None = None
    hu_p95: float | None = None


@dataclass
class Lesion:
    id: int
    voxels: int
    volume_ml: float
    long_axis_mm: float
    short_axis_mm: float
    centroid_mm: list[float]
    organ: int | None  # FLARE id of the organ it lies in or touches most; None: none

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["organ_name"] = label_name(self.organ) if self.organ is not None else None
        return d


@dataclass
class CaseStats:
    id: str | None  # None: an image with no name (the Python API's in-memory images)
    classes: dict[int, ClassStats] = field(default_factory=dict)
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    @property
    def tumor_burden_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def sum_long_axes_mm(self) -> float:
        return float(sum(lesion.long_axis_mm for lesion in self.lesions))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id,
                "classes": {str(c): asdict(s) for c, s in sorted(self.classes.items())},
                "lesions": [lesion.to_json() for lesion in self.lesions],
                "lesion_count": self.lesion_count,
                "tumor_burden_ml": round(self.tumor_burden_ml, 4),
                "sum_long_axes_mm": round(self.sum_long_axes_mm, 2)}


def case_stats(case_id: str | None, labels: np.ndarray, geometry: Geometry,
               image: np.ndarray | None = None, min_tumor_mm3: float = MIN_TUMOR_MM3
               ) -> CaseStats:
    """Statistics of one uint8 label map ([z, y, x]) and, optionally, its CT on the same
    grid."""
    out = CaseStats(case_id)
    ml = geometry.voxel_volume_mm3 / 1000.0
    counts = label_counts(labels, minlength=MAX_LABEL + 1)
    boxes = ndimage.find_objects(labels, max_label=MAX_LABEL)
    for c in range(1, MAX_LABEL + 1):
        if counts[c] == 0:
            continue
        s = ClassStats(int(counts[c]), round(float(counts[c]) * ml, 4))
        if image is not None:
            box = boxes[c - 1]
            values = image[box][labels[box] == c].astype(np.float64)
            p5, median, p95 = np.percentile(values, [5, 50, 95])
            s.hu_mean, s.hu_std = round(float(values.mean()), 2), round(float(values.std()), 2)
            s.hu_median, s.hu_p5, s.hu_p95 = (round(float(v), 2) for v in (median, p5, p95))
        out.classes[c] = s
    if counts[TUMOR]:
        out.lesions = lesions(labels, geometry, boxes[TUMOR - 1], min_tumor_mm3)
    return out


def lesions(labels: np.ndarray, geometry: Geometry, tumor_box, min_tumor_mm3: float
            ) -> list[Lesion]:
    """The lesions of the tumor class, largest first."""
    box = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1))
                for s, n in zip(tumor_box, labels.shape, strict=True))
    region = labels[box]
    components, n = ndimage.label(region == TUMOR, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    ml = geometry.voxel_volume_mm3 / 1000.0
    offset = np.array([s.start for s in box])
    found = []
    for k, sub in enumerate(ndimage.find_objects(components), start=1):
        mask = components[sub] == k
        voxels = int(mask.sum())
        if voxels * geometry.voxel_volume_mm3 < min_tumor_mm3:
            continue
        index = np.argwhere(mask) + offset + [s.start for s in sub]
        points = geometry.index_to_physical(index)
        long_axis, short_axis = recist_axes(points, geometry)
        found.append(Lesion(0, voxels, round(voxels * ml, 4), round(long_axis, 2),
                            round(short_axis, 2), [round(float(v), 2) for v in points.mean(0)],
                            _organ(region, components, k, sub)))
    found.sort(key=lambda lesion: (-lesion.voxels, lesion.centroid_mm))
    for i, lesion in enumerate(found, start=1):
        lesion.id = i
    return found


def _organ(region: np.ndarray, components: np.ndarray, k: int, sub) -> int | None:
    """The organ with most voxels in the lesion's one-voxel shell (26-neighbourhood)."""
    grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1))
                  for s, n in zip(sub, region.shape, strict=True))
    mask = components[grown] == k
    shell = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool)) & ~mask
    around = region[grown][shell]
    around = around[np.isin(around, ORGANS)]
    if around.size == 0:
        return None
    counts = np.bincount(around, minlength=MAX_LABEL + 1)
    return int(np.argmax(counts))


def _voxel_extent(geometry: Geometry, direction: np.ndarray) -> float:
    """How far one voxel reaches along a world direction (unit vector), in mm."""
    axes = geometry.direction_matrix * np.asarray(geometry.spacing_xyz)  # columns: voxel axes
    return float(np.abs(direction @ axes).sum())


def recist_axes(points: np.ndarray, geometry: Geometry) -> tuple[float, float]:
    """(long axis, short axis) in mm of a lesion given as world points (N, 3) of its voxel
    centres: see the module docstring."""
    z = points[:, 2]
    thickness = _voxel_extent(geometry, np.array([0.0, 0.0, 1.0]))
    planes = np.round((z - z.min()) / max(thickness, 1e-6)).astype(np.int64)
    best = (-1.0, 0.0)
    for p in np.unique(planes):
        xy = points[planes == p][:, :2]
        long_axis, direction = _diameter(xy)
        long_axis += _voxel_extent(geometry, np.array([*direction, 0.0])) / 2
        if long_axis > best[0]:
            perpendicular = np.array([-direction[1], direction[0]])
            width = xy @ perpendicular
            short_axis = float(width.max() - width.min()) + _voxel_extent(
                geometry, np.array([*perpendicular, 0.0])) / 2
            best = (long_axis, short_axis)
    return best


def _diameter(xy: np.ndarray) -> tuple[float, np.ndarray]:
    """(largest distance between two points, its unit direction) of 2-D points."""
    unique = np.unique(np.round(xy, 6), axis=0)
    if len(unique) == 1:
        return 0.0, np.array([1.0, 0.0])
    hull = unique
    if len(unique) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = unique[ConvexHull(unique).vertices]
        except QhullError:  # collinear points: all of them are on the "hull"
            hull = unique
    d = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((d ** 2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(dist[i, j]), d[i, j] / dist[i, j]


def csv_rows(cases: list[CaseStats]) -> tuple[list[str], list[list[Any]]]:
    """One row per case and class (the lesion summary repeated on the tumor row)."""
    header = ["case", "label", "name", "voxels", "volume_ml", *HU_FIELDS, "lesion_count",
              "tumor_burden_ml", "sum_long_axes_mm"]
    rows = []
    for case in cases:
        for c, s in sorted(case.classes.items()):
            tumor = [case.lesion_count, round(case.tumor_burden_ml, 4),
                     round(case.sum_long_axes_mm, 2)] if c == TUMOR else ["", "", ""]
            rows.append([case.id, c, label_name(c), s.voxels, s.volume_ml,
                         *["" if getattr(s, f) is None else getattr(s, f) for f in HU_FIELDS],
                         *tumor])
    return header, rows


@dataclass(frozen=True)
class StatsJob:
    case: str
    label: str
    image: str | None
    min_tumor_mm3: float
    image_series: str | None = None  # the DICOM series when ``image`` is a folder


def stats_case(job: StatsJob) -> tuple[CaseStats | None, list[str]]:
    """(statistics, problems) of one case read from disk; a problem leaves the case out."""
    from flarecli.core.errors import FlareError
    from flarecli.core.io.cases import read_labelled_scan
    from flarecli.core.io.nifti import read_label_map

    try:
        if job.image is None:
            labels, geometry = read_label_map(job.label, "label")
            image = None
        else:
            labels, geometry, image = read_labelled_scan(job.label, job.image,
                                                         job.image_series)
        return case_stats(job.case, labels, geometry, image, job.min_tumor_mm3), []
    except FlareError as e:
        return None, [str(e)]


def stats_json(cases: list[CaseStats], min_tumor_mm3: float) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "min_tumor_mm3": min_tumor_mm3,
            "cases": [c.to_json() for c in cases]}
