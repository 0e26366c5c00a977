"""flare evaluate against the organisers' own way of scoring, and postprocess speed.

    python bench/evaluate_speed.py [--pairs 2] [--workers 1] [--repeat 1]

Writes realistic-size synthetic pairs (512 x 512 x ~270, all 14 classes, an imperfect
prediction) as .nii.gz, then times, each in a fresh process and start-up included:

* the official FLARE23 evaluation loop, re-implemented here as the organisers wrote it: per
  case, both files read as float64 and cast to uint8; per class, full-volume masks, sums and
  Dice; aorta / IVC / esophagus cut to the GT's ``[z_min:z_max]``; for NSD, the DeepMind
  surface-distance routine (crop to the masks' bounding box, 2x2x2 neighbour codes by
  correlation, a Euclidean distance transform per mask, surfels sorted by distance);
* ``flare evaluate PRED GT --protocol flare23``.

Prints both times (wall clock, and the CPU seconds the process used, which another load on
the machine disturbs less), the ratio, and the largest difference between their DSC / NSD
values (which must be 0: flare23 reproduces the official numbers). ``--repeat N`` keeps the
best of N runs of each. Then postprocess seconds per case.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, cpu_description, imperfect_prediction, realistic_case

WORK = ROOT / "bench" / "out" / "evaluate"

#: The official loop (run in a fresh process): python - GT_DIR PRED_DIR OUT_JSON
OFFICIAL = r'''
import json, sys
from pathlib import Path
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from flarecli.core.metrics.surface_table import neighbour_code_to_normals

from flarecli.core.labels import NSD_TOLERANCE_MM as TOLERANCE  # the official table

def load(path):  # nibabel's get_fdata(): float64 (x, y, z), then np.uint8; get_zooms()
    from flarecli.core.io.nifti import header_zooms

    image = sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(image).astype(np.float64).transpose(2, 1, 0)
    return np.uint8(data), header_zooms(path)

def surface_distances(mask_gt, mask_pred, spacing):
    area = np.zeros(256)
    for code in range(256):
        for n in neighbour_code_to_normals(code):
            v = np.array([n[0] * spacing[1] * spacing[2], n[1] * spacing[0] * spacing[2],
                          n[2] * spacing[0] * spacing[1]])
            area[code] += np.linalg.norm(v)
    mask_all = mask_gt | mask_pred
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(np.max(mask_all, axis=others))[0]
        if len(idx) == 0:
            return None
        lo[axis], hi[axis] = idx.min(), idx.max()
    crop = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    out = []
    for mask in (mask_gt, mask_pred):
        padded = np.zeros(hi - lo + 2, np.uint8)
        padded[:-1, :-1, :-1] = mask[crop]
        code = ndimage.correlate(padded.astype(np.uint8), kernel, mode="constant", cval=0)
        border = (code != 0) & (code != 255)
        out.append((code, border))
    (code_g, border_g), (code_p, border_p) = out
    def edt(border):
        if border.any():
            return ndimage.distance_transform_edt(~border, sampling=spacing)
        return np.inf * np.ones(border.shape)
    dist_g, dist_p = edt(border_g), edt(border_p)
    d_gp, a_g = dist_p[border_g], area[code_g][border_g]
    d_pg, a_p = dist_g[border_p], area[code_p][border_p]
    sg = np.array(sorted(zip(d_gp, a_g)))
    sp = np.array(sorted(zip(d_pg, a_p)))
    return sg[:, 0], sp[:, 0], sg[:, 1], sp[:, 1]

def nsd(sd, tol):
    d_gp, d_pg, a_g, a_p = sd
    return (a_g[d_gp <= tol].sum() + a_p[d_pg <= tol].sum()) / (a_g.sum() + a_p.sum())

gt_dir, pred_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
scores = {}
for path in sorted(gt_dir.glob("*.nii.gz")):
    gt, spacing = load(path)
    seg, _ = load(pred_dir / path.name)
    for i in TOLERANCE:
        g, s = gt == i, seg == i
        if np.sum(g) == 0 and np.sum(s) == 0:
            dsc = value = 1.0
        elif np.sum(g) == 0 and np.sum(s) > 0:
            dsc = value = 0.0
        else:
            if i in (5, 6, 10):
                z = np.where(g)[2]
                g, s = g[:, :, z.min():z.max()], s[:, :, z.min():z.max()]
            dsc = 2 * np.sum(g & s) / (np.sum(g) + np.sum(s))
            value = 0.0 if dsc < 0.2 else nsd(surface_distances(g, s, spacing), TOLERANCE[i])
        scores[f"{path.name[:-7]}/{i}"] = [round(float(dsc), 4), round(float(value), 4)]
out.write_text(json.dumps(scores))
'''


def make_pairs(n: int) -> tuple[Path, Path]:
    from flarecli.core.io.nifti import write_volume

    gt_dir, pred_dir = WORK / f"gt{n}", WORK / f"pred{n}"
    if gt_dir.is_dir() and len(list(pred_dir.glob("*.nii.gz"))) == n:
        return gt_dir, pred_dir
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _, gt, g, _ = realistic_case(100 + i, slices=(260, 280))
        write_volume(gt_dir / f"case_{i:03d}.nii.gz", gt, g)
        write_volume(pred_dir / f"case_{i:03d}.nii.gz", imperfect_prediction(gt, i), g)
    return gt_dir, pred_dir


def timed(cmd: list[str], repeat: int = 1) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeat`` runs of ``cmd``."""
    import resource

    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, (wall, cpu))
    return best


def difference(a: float, b: float) -> float:
    """|a - b|, with NaN equal to NaN and infinitely far from a number (a plain max() of
    differences would pass over a NaN)."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each")
    args = ap.parse_args()
    print(cpu_description())
    gt_dir, pred_dir = make_pairs(args.pairs)
    official_json, flare_csv = WORK / "official.json", WORK / "flare.csv"
    t_flare, cpu_flare = timed([sys.executable, "-m", "flarecli", "evaluate", str(pred_dir),
                                str(gt_dir), "--protocol", "flare23", "--csv", str(flare_csv),
                                "--workers", str(args.workers)], args.repeat)
    t_official, cpu_official = timed([sys.executable, "-c", OFFICIAL, str(gt_dir), str(pred_dir),
                                      str(official_json)], args.repeat)
    official = json.loads(official_json.read_text())
    diff = 0.0
    with flare_csv.open() as f:
        for row in csv.DictReader(f):
            ref = official[f"{row['case']}/{row['label']}"]
            for ours, theirs in ((float(row["dsc"]), ref[0]), (float(row["nsd"]), ref[1])):
                diff = max(diff, difference(ours, theirs))
    print(f"{args.pairs} pairs of 512x512x~270, fresh processes, best of {args.repeat}: "
          f"official loop {t_official:.2f} s, flare evaluate {t_flare:.2f} s "
          f"({args.workers} worker(s)): {t_official / t_flare:.1f}x; CPU seconds "
          f"{cpu_official:.2f} vs {cpu_flare:.2f} ({cpu_official / cpu_flare:.1f}x); "
          f"largest |difference| of a DSC/NSD {diff:.1e}")

    import numpy as np

    from flarecli.core.io.nifti import read_volume
    from flarecli.core.postprocessing.components import postprocess

    for path in sorted(pred_dir.glob("*.nii.gz")):
        pred, g = read_volume(path)
        t0 = time.perf_counter()
        postprocess(pred.astype(np.uint8), g.voxel_volume_mm3)
        print(f"postprocess {path.name}: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
