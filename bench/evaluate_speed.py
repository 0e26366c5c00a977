"""flare evaluate vs a straightforward whole-volume implementation, and postprocess speed.

Realistic-size synthetic cases (512 x 512 x ~300, all 14 classes, an imperfect prediction).
Prints per case: seconds of the fast (bounding-box) scorer and of the whole-volume reference,
the speed-up, the largest |difference| of any DSC/NSD, and postprocess seconds.

    python bench/evaluate_speed.py [--cases 1] [--skip-reference]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import imperfect_prediction, peak_rss_mb, realistic_case

from flarecli.core.metrics.evaluate import score_labels
from flarecli.core.postprocessing.components import postprocess
from tests.reference import reference_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    for i in range(args.cases):
        _, gt, g, _ = realistic_case(100 + i)
        pred = imperfect_prediction(gt, i)
        shape = "x".join(map(str, g.shape_zyx[::-1]))
        t0 = time.perf_counter()
        fast = {s.label: (s.dsc, s.nsd) for s in score_labels(gt, pred, g, "exact")}
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        cleaned, removed = postprocess(pred, g.voxel_volume_mm3)
        t_post = time.perf_counter() - t0
        line = (f"case {i}: {shape} spacing {tuple(round(s, 3) for s in g.spacing_xyz)}  "
                f"fast {t_fast:.2f} s  postprocess {t_post:.2f} s")
        if not args.skip_reference:
            t0 = time.perf_counter()
            slow = reference_scores(gt, pred, g.spacing_xyz, flare23=False,
                                    superior_axis_zyx=g.superior_axis())
            t_slow = time.perf_counter() - t0
            diff = max(max(abs(a - b) for a, b in zip(slow[c], fast[c], strict=True))
                       for c in slow if not np.isnan(slow[c][0]))
            line += f"  reference {t_slow:.1f} s  speed-up {t_slow / t_fast:.0f}x  " \
                    f"max |diff| {diff:.1e}"
        print(line, flush=True)
        print("  organ DSC " + " ".join(f"{c}:{fast[c][0]:.3f}" for c in sorted(fast)))
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
