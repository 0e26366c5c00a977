"""The tumor stage's ceiling: what it reaches when every training case's lesions are known.

    python bench/tumor_ceiling.py DEMO [--set KEY=VALUE ...] [--work DIR]

DEMO is a ``flare demo`` folder of synthetic data, whose ``data/labelsFull`` holds the
complete labels of every training case. The demo's final model is copied without its tumor
stage, that stage is trained again (the demo's recipe and preset, plus each ``--set``) on
the complete labels, and the model is scored on the test split with FLARE's rules. Prints
the training time, the organ mean, the tumor DSC and the lesion figures of ``flare
evaluate``. A low ceiling says the stage's design or the data limit it, not the labels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_description, demo_pipeline

FLARE = [sys.executable, "-m", "flarecli"]


def tumor_stage(model: Path, graph: str) -> str:
    """The stage of ``graph`` whose output holds the tumor class (the last such output)."""
    from flarecli.core.inference.engine import read_model_recipe
    from flarecli.core.labels import TUMOR
    from flarecli.core.recipes.heads import every_class

    recipe = read_model_recipe(model)
    found = [out.stage for out in recipe.models[graph].outputs
             if any(TUMOR in every_class(classes)
                    for classes in recipe.stages[out.stage].network.heads.values())]
    if not found:
        raise SystemExit(f"{model}: the '{graph}' model has no tumor output")
    return found[-1]


def perfect_dataset(data: Path, out: Path) -> None:
    """The training images with their complete labels (links, nothing copied)."""
    (out / "labelsTr").mkdir(parents=True)
    (out / "imagesTr").symlink_to((data / "imagesTr").resolve())
    cases = {p.name.removesuffix("_0000.nii.gz") for p in (data / "imagesTr").glob("*.nii.gz")}
    for label in sorted((data / "labelsFull").glob("*.nii.gz")):  # also holds imagesUn's
        if label.name.removesuffix(".nii.gz") in cases:
            (out / "labelsTr" / label.name).symlink_to(label.resolve())
    shutil.copy(data / "dataset.json", out / "dataset.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe field for the tumor stage's training (repeatable)")
    parser.add_argument("--work", type=Path, help="keep the model and predictions here")
    args = parser.parse_args()
    record, source = demo_pipeline(args.demo)
    graph = source.name
    data = args.demo / "data"
    if not (data / "labelsFull").is_dir():
        raise SystemExit(f"{data}: no labelsFull (the ceiling needs a synthetic dataset)")
    stage = tumor_stage(source, graph)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "model"
        shutil.copytree(source, model, ignore=lambda d, names: [stage] if Path(d) == source
                        else [])
        perfect_dataset(data, work / "perfect")
        sets = [x for s in args.set for x in ("--set", s)]
        t0 = time.perf_counter()
        subprocess.run([*FLARE, "train", str(work / "perfect"), "--stage", stage, "--recipe",
                        record["recipe"], "--preset", record["preset"], "--out", str(model),
                        "--data", "all", *sets], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        subprocess.run([*FLARE, "infer", str(data / "imagesTs"), str(work / "pred"),
                        "--model", str(model)], check=True, stdout=subprocess.DEVNULL)
        scores = work / "scores.json"
        subprocess.run([*FLARE, "evaluate", str(work / "pred"), str(data / "labelsTs"),
                        "--json", str(scores)], check=True, stdout=subprocess.DEVNULL)
        summary = json.loads(scores.read_text())
        n_cases = len(list((work / "perfect" / "labelsTr").iterdir()))
    print(cpu_description())
    print(f"{record['recipe']} / {record['preset']}, stage '{stage}' trained on the complete "
          f"labels of {n_cases} cases in "
          f"{seconds:.0f} s" + (f" with {' '.join(args.set)}" if args.set else ""))
    print(f"organ mean {summary['organ_dsc']:.4f}, tumor DSC {summary['tumor_dsc']:.4f}")
    lesions = summary.get("lesions")
    if lesions:
        print(f"lesions: {lesions['detected']} of {lesions['true_lesions']} found "
              f"(sensitivity {lesions['sensitivity']:.2f}), "
              f"{lesions['fp_per_case']:.2f} false positives per case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
