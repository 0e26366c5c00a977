"""A deliberately straightforward, whole-volume implementation of the FLARE scores.

Used by the tests and by bench/evaluate_speed.py as the slow reference the fast bounding-box
implementation (flarecli.core.metrics.evaluate) must agree with. It follows the official script step
by step: NIfTI voxel order (x, y, z), ``scipy.ndimage.correlate`` for neighbourhood codes, a
distance transform over the whole (padded) volume for every class, no cropping anywhere.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from flarecli.core.labels import CLASSES, NSD_TOLERANCE_MM, TUBULAR
from flarecli.core.metrics.surface_table import neighbour_code_to_area

KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


def _surface(mask_xyz, spacing_xyz):
    padded = np.zeros(np.array(mask_xyz.shape) + 1, np.uint8)
    padded[:-1, :-1, :-1] = mask_xyz
    code = ndimage.correlate(padded, KERNEL, mode="constant", cval=0)
    border = (code != 0) & (code != 255)
    dist = (ndimage.distance_transform_edt(~border, sampling=spacing_xyz) if border.any()
            else np.full(border.shape, np.inf))
    return border, dist, neighbour_code_to_area(tuple(spacing_xyz))[code]


def reference_nsd(gt_xyz, pred_xyz, spacing_xyz, tolerance_mm):
    bg, dg, ag = _surface(gt_xyz, spacing_xyz)
    bp, dp, ap = _surface(pred_xyz, spacing_xyz)
    total = ag[bg].sum() + ap[bp].sum()
    if total == 0:
        return float("nan")
    within = ag[bg][dp[bg] <= tolerance_mm].sum() + ap[bp][dg[bp] <= tolerance_mm].sum()
    return float(within / total)


def reference_scores(gt_zyx, pred_zyx, spacing_xyz, flare23=True, nsd_threshold=0.2,
                     superior_axis_zyx=0):
    """{class: (dsc, nsd)} for two label maps in flare's [z, y, x] order."""
    gt = np.asarray(gt_zyx).transpose(2, 1, 0)  # -> (x, y, z), as nibabel gives it
    pred = np.asarray(pred_zyx).transpose(2, 1, 0)
    axis_xyz = 2 - superior_axis_zyx
    out = {}
    for c in CLASSES:
        g_all, p_all = gt == c, pred == c
        if g_all.sum() == 0:
            out[c] = (1.0, 1.0) if p_all.sum() == 0 else (0.0, 0.0)
            continue
        if c in TUBULAR:
            idx = np.where(g_all)[axis_xyz if not flare23 else 2]
            lo, hi = idx.min(), idx.max() + (0 if flare23 else 1)
            sl = [slice(None)] * 3
            sl[axis_xyz if not flare23 else 2] = slice(lo, hi)
            g_all, p_all = g_all[tuple(sl)], p_all[tuple(sl)]
        total = g_all.sum() + p_all.sum()
        dsc = 2.0 * (g_all & p_all).sum() / total if total else float("nan")
        if dsc < nsd_threshold:
            nsd = 0.0
        else:
            nsd = reference_nsd(g_all, p_all, spacing_xyz, NSD_TOLERANCE_MM[c])
        out[c] = (float(dsc), float(nsd))
    return out
