"""Does the tumor stage cost the organs? Every organ's DSC with and without it.

    python bench/tumor_organs.py DEMO [--model MODEL] [--tolerance 0.01]

DEMO is a ``flare demo`` folder (its ``data/imagesTs``, ``data/labelsTs`` and the final model
``run/<final>``, or ``--model``). The model folder is run twice on the test split -- with its
tumor stage merged over the organs, and without it (as the same folder minus ``tumor/``
would) -- and both are scored with FLARE's rules. Prints each organ's mean DSC both ways, the
difference, and whether every organ stays within ``--tolerance`` (the target: 0.01), then the
tumor and lesion figures of the run with the tumor stage. Exit code 1 when an organ falls
outside the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import cpu_description, demo_pipeline

from flarecli.core.labels import LABELS, ORGANS


def scores(demo: Path, model: Path, with_tumor: bool, out: Path) -> dict:
    from flarecli.core.inference.folder import PredictRun, input_cases, predict
    from flarecli.core.pipeline.demo import evaluate_folder

    images, truth = demo / "data" / "imagesTs", demo / "data" / "labelsTs"
    cases, _ = input_cases(images, out, model)
    predict(PredictRun("infer", model, out, device="cpu", with_tumor=with_tumor), cases,
            str(images))
    summary, _ = evaluate_folder(out, truth, workers=1)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    model = args.model or demo_pipeline(args.demo)[1]
    with tempfile.TemporaryDirectory() as tmp:
        both = scores(args.demo, model, True, Path(tmp) / "with")
        alone = scores(args.demo, model, False, Path(tmp) / "without")
    print(cpu_description())
    print(f"model {model}: organ DSC on {args.demo / 'data' / 'labelsTs'}")
    print(f"{'organ':16s} {'with tumor':>10s} {'without':>10s} {'change':>8s}")
    worst = 0.0
    for c in ORGANS:
        a = both["per_class"][str(c)]["dsc"] or 0.0
        b = alone["per_class"][str(c)]["dsc"] or 0.0
        worst = min(worst, a - b)
        print(f"{LABELS[c]:16s} {a:10.4f} {b:10.4f} {a - b:+8.4f}")
    print(f"organ mean {both['organ_dsc']:.4f} with the tumor stage, "
          f"{alone['organ_dsc']:.4f} without; tumor DSC {both['tumor_dsc']:.4f}")
    if "lesions" in both:
        print("lesions: " + json.dumps(both["lesions"]))
    ok = worst >= -args.tolerance
    print(f"every organ within {args.tolerance} of the model without its tumor stage: "
          f"{'yes' if ok else 'no'} (largest loss {-worst:.4f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
