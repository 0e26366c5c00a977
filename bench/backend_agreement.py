"""Do the CPU backends give the same labels? torch fp32 against OpenVINO at its default
precision (bf16 on CPUs that have it) and strict f32, on trained models.

    python bench/backend_agreement.py --data DATASET --model NAME=MODEL_DIR [...]
                                      [--paper-student STEPS]

DATASET is a ``flare synth`` folder (imagesTs/labelsTs are scored; imagesTr with labelsFull
train the paper student). ``--paper-student STEPS`` also trains the stmt paper student's
organ network (Res-UNet, 16 base channels, 5 levels) at 64^3 for STEPS steps on the CPU, with
the coarse stage of the first model, and runs it twice: at the size it was trained at and at
192^3 (fully convolutional; the paper's inference size).

Per model and scan set -- the test split, an out-of-distribution proxy of it (contrast
x1.1, +40 HU, noise sigma 25 HU) and the real CT of ../shared/data when it is there -- the
share of foreground voxels (either side labels them) with the same label, and mean organ DSC
of each backend. The bar: >= 99.5 % and DSC within 0.005.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import ROOT, cpu_description

WORK = ROOT / "bench" / "out" / "agreement"
PAPER_ARGS = {"base_channels": 16, "n_down": 5, "blocks_down": 1, "blocks_up": 0,
              "max_channels": 128}


def paper_student(data: Path, coarse_from: Path, steps: int) -> Path:
    """stmt's paper organ network trained briefly at 64^3 on the complete synthetic labels."""
    from flarecli.core.recipes.load import load_recipe
    from flarecli.core.training.options import TrainRun
    from flarecli.core.training.run import train

    out = WORK / "paper_student"
    if (out / "organs" / "model.json").is_file():
        return out
    full = WORK / "paper_data"
    shutil.rmtree(full, ignore_errors=True)
    full.mkdir(parents=True)
    (full / "imagesTr").symlink_to((data / "imagesTr").resolve())
    (full / "labelsTr").symlink_to((data / "labelsFull").resolve())
    epochs = max(1, steps // 20)
    recipe = load_recipe("stmt", "cpu", {
        "stages.organs.network.args": PAPER_ARGS, "stages.organs.geometry.size_zyx": [64] * 3,
        "stages.organs.epochs": epochs,
        "stages.organs.iterations": 20, "stages.organs.val_fraction": 0.0})
    t0 = time.perf_counter()
    train(TrainRun(recipe, "organs", str(full), str(out), device="cpu", workers=0))
    print(f"paper student organs: {epochs * 20} steps at 64^3 in {time.perf_counter() - t0:.0f} s")
    shutil.copytree(coarse_from / "coarse", out / "coarse")
    return out


def at_size(model: Path, size: int) -> Path:
    """A copy of a model folder whose organ stage runs at size^3."""
    out = model.parent / f"{model.name}_{size}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model, out)
    path = out / "organs" / "model.json"
    meta = json.loads(path.read_text())
    meta["stage"]["geometry"]["size_zyx"] = [size] * 3
    path.write_text(json.dumps(meta, indent=2))
    return out


#: The real scan of ../shared/data (never seen in training), when it is there.
REAL = ROOT.parent / "shared" / "data" / "totalseg-example"


def ood_proxy(data: Path) -> Path:
    """The test split's scans made out of distribution as a real scanner would: contrast
    x1.1, +40 HU, Gaussian noise of sigma 25 HU (seeded); the same labels."""
    import numpy as np

    from flarecli.core.io.nifti import read_volume, write_volume

    out = WORK / "ood" / "images"
    if out.is_dir():
        return out
    tmp = out.with_name("images.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for path in sorted((data / "imagesTs").glob("*.nii.gz")):
        image, geometry = read_volume(path)
        shifted = image.astype(np.float32) * 1.1 + 40 + rng.normal(0, 25, image.shape)
        write_volume(tmp / path.name, np.clip(shifted, -1024, 3071).astype(np.int16), geometry)
    tmp.rename(out)
    return out


def scan_sets(data: Path) -> dict[str, tuple[Path, Path]]:
    """Name -> (images, labels) scored: the test split, its OOD proxy, the real scan."""
    sets = {"test split": (data / "imagesTs", data / "labelsTs"),
            "OOD proxy": (ood_proxy(data), data / "labelsTs")}
    if (REAL / "ts_example_0000.nii.gz").is_file():
        real = WORK / "real"
        if not real.is_dir():
            (real / "images").mkdir(parents=True)
            (real / "labels").mkdir()
            (real / "images" / "ts_example_0000.nii.gz").symlink_to(
                REAL / "ts_example_0000.nii.gz")
            (real / "labels" / "ts_example.nii.gz").symlink_to(REAL / "ts_example.nii.gz")
        sets["real CT"] = (real / "images", real / "labels")
    return sets


def compare(name: str, model: Path, data: Path) -> dict:
    """Every backend on every scan set: agreement with torch f32 and organ DSC."""
    result: dict = {"model": name, "sets": {}}
    print(f"\n{name} ({model})")
    for set_name, (images, labels) in scan_sets(data).items():
        result["sets"][set_name] = compare_on(name, set_name, model, images, labels)
    return result


def compare_on(name: str, set_name: str, model: Path, images: Path, labels: Path) -> dict:
    from flarecli.core.inference.folder import PredictRun, input_cases, predict
    from flarecli.core.io.nifti import read_volume
    from flarecli.core.pipeline.demo import evaluate_folder

    runs = {"torch f32": ("torch", "f32"), "openvino default": ("openvino", "auto"),
            "openvino f32": ("openvino", "f32")}
    folders, scores, precisions = {}, {}, {}
    for label, (backend, precision) in runs.items():
        out = WORK / name / set_name.replace(" ", "_") / label.replace(" ", "_")
        cases, _ = input_cases(images, out, model)
        _, record = predict(PredictRun("infer", model, out, device="cpu", backend=backend,
                                       precision=precision, cache_dir=WORK / "cache",
                                       overwrite=True), cases, "bench")
        precisions[label] = "/".join(sorted({b["precision"]
                                             for b in record["backends"].values()}))
        folders[label] = out
        scores[label] = evaluate_folder(out, labels, 2)[0]["organ_dsc"]
    ref = folders["torch f32"]
    result = {"dsc": scores, "precision": precisions, "agreement": {}}
    for label, folder in folders.items():
        same = total = 0
        for path in sorted(ref.glob("*.nii.gz")):
            a, _ = read_volume(path)
            b, _ = read_volume(folder / path.name)
            fg = (a > 0) | (b > 0)
            same += int((a[fg] == b[fg]).sum())
            total += int(fg.sum())
        result["agreement"][label] = same / max(total, 1)
    print(f"  {set_name}:")
    for label in runs:
        print(f"    {label:17s} [{precisions[label]}]: organ DSC {scores[label]:.4f} "
              f"(delta {scores[label] - scores['torch f32']:+.4f}), same label on "
              f"{100 * result['agreement'][label]:.2f} % of foreground voxels")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR")
    ap.add_argument("--paper-student", type=int, default=0, help="train steps (0: skip)")
    args = ap.parse_args()
    print(cpu_description())
    models = [(m.split("=", 1)[0], Path(m.split("=", 1)[1])) for m in args.model]
    if args.paper_student:
        paper = paper_student(args.data, models[0][1], args.paper_student)
        models += [("paper student at 64^3", paper),
                   ("paper student at 192^3", at_size(paper, 192))]
    results = [compare(name.replace(" ", "_").replace("^", ""), path, args.data)
               for name, path in models]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    every = [(r["model"], k, v) for r in results for k, v in r["sets"].items()]
    for set_name in dict.fromkeys(k for _, k, _ in every):
        rows = [v for _, k, v in every if k == set_name]
        worst = min(v["agreement"]["openvino default"] for v in rows)
        gap = max(abs(v["dsc"]["openvino default"] - v["dsc"]["torch f32"]) for v in rows)
        print(f"agreement on the {set_name}, openvino default vs torch f32: worst "
              f"{100 * worst:.2f} % of foreground voxels, largest organ DSC gap {gap:.4f} "
              f"({len(rows)} models)")


if __name__ == "__main__":
    main()
