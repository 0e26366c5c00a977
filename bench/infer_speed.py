"""flare infer speed and memory on realistic-size scans (512 x 512 x ~300).

    python bench/infer_speed.py [--scans 3] [--device cpu|cuda] [--trained MODEL_DIR]
                                [--precision auto|f32|int8] [--backends torch,openvino]
                                [--calibration 4]

Without --trained, paper-size bundles with random weights are written (StMt student
Res-UNet: coarse 128^3, organs and tumor 192^3), which is what speed depends on. Random
weights would give a random ROI and noise for labels, so the engine is given what a trained
model gives: the fine stages see the scan's true organ box plus the stage's margin (its size
is printed), and after each network has run (every step is still done and timed) its labels
are replaced by the true labels of that region -- post-processing 13 classes of noise takes
seconds that a trained model's output never costs.

On the CPU, each backend runs the folder in this process (warm: the model is loaded and, for
OpenVINO, compiled before the clock starts), then one scan runs in a fresh process with the
compiled-model cache warm -- how the FLARE laptop tasks time a scan. Per backend: seconds per
scan (folder wall time / scans), the mean of every step (--profile), peak RSS sampled during
the scans, the CPU area; the last line compares the backends. On CUDA: torch only, with GPU
memory and its area (FLARE's efficiency measure).

``--precision int8`` quantizes with ``--calibration N`` realistic scans of their own (not the
timed ones); the first, untimed scan captures their inputs with the engine as it is (random
weights: only the inputs' ranges matter to the speed), so the timed scans and the fresh
process find the quantized models in the cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, cpu_description, realistic_case

WORK = ROOT / "bench" / "out" / "infer"


def random_bundles(folder: Path) -> None:
    """The stmt paper model (student Res-UNet: coarse 128^3, organs and tumor 192^3) with
    random weights: speed does not depend on the weights."""
    import torch

    from flarecli.core.io.bundle import save_weights, write_bundle
    from flarecli.core.preprocessing.intensity import window
    from flarecli.core.recipes.load import load_recipe
    from flarecli.core.recipes.typed import to_json
    from flarecli.core.training.export import write_model_recipe
    from flarecli.core.training.network import build_network

    recipe = load_recipe("stmt", "paper")
    for name in ("coarse", "organs", "tumor"):
        torch.manual_seed(0)
        stage = recipe.stages[name]
        model, arch = build_network(stage)
        run = folder / name
        run.mkdir(parents=True, exist_ok=True)
        sha = save_weights(run, "final", model.state_dict())
        write_bundle(run, {"recipe": recipe.name, "preset": recipe.preset, "stage_name": name,
                           "stage": to_json(stage), "architecture": arch,
                           "intensity": window((-325.0, 325.0)).to_json(),
                           "default_weights": "final", "exported": "model"}, {"final": sha})
    write_model_recipe(folder, recipe)


def make_inputs(n: int) -> tuple[Path, Path]:
    """n realistic scans; a JSON of their true organ boxes and the true label maps (.npy),
    both in canonical voxels."""
    import numpy as np

    from flarecli.core.io.nifti import write_volume
    from flarecli.core.preprocessing.boxes import box_of
    from flarecli.core.preprocessing.orientation import to_canonical

    inputs, boxes = WORK / f"in{n}", WORK / f"in{n}_boxes.json"
    if inputs.is_dir() and boxes.is_file() and (WORK / f"in{n}_truth").is_dir():
        return inputs, boxes
    tmp = WORK / "tmp_in"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "truth").mkdir(parents=True)
    found = {}
    for i in range(n):
        image, label, geometry, _ = realistic_case(300 + i, slices=(290, 310))
        write_volume(tmp / f"scan_{i:03d}_0000.nii.gz", image, geometry)
        canonical = np.ascontiguousarray(to_canonical(geometry.direction).apply(label))
        np.save(tmp / "truth" / f"scan_{i:03d}.npy", canonical.astype(np.uint8))
        found[f"scan_{i:03d}"] = [list(map(int, b)) for b in box_of(canonical > 0)]
    for path in (inputs, WORK / f"in{n}_truth"):
        shutil.rmtree(path, ignore_errors=True)
    (tmp / "truth").rename(WORK / f"in{n}_truth")
    tmp.rename(inputs)
    boxes.write_text(json.dumps(found))
    return inputs, boxes


def calibration_scans(n: int) -> Path:
    """n realistic scans for ``--precision int8``'s calibration, drawn apart from the timed
    ones."""
    from flarecli.core.io.nifti import write_volume

    folder = WORK / f"calibration{n}"
    if folder.is_dir() and len(list(folder.glob("*.nii.gz"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    tmp = WORK / "tmp_calibration"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(n):
        image, _, geometry, _ = realistic_case(400 + i, slices=(290, 310))
        write_volume(tmp / f"calib_{i:03d}_0000.nii.gz", image, geometry)
    tmp.rename(folder)
    return folder


def realistic_engine(boxes_file: Path):
    """Make the engine behave as a trained one on the bench's scans, which it sees in folder
    order: each ROI is the scan's true organ box, and each output stage's labels are the true
    labels of its region, mapped to the stage's head classes. The networks still run and are
    timed; only what they return is replaced. Returns the undo."""
    import numpy as np

    from flarecli.core.inference import stages as ST
    from flarecli.core.inference.engine import Engine
    from flarecli.core.preprocessing.boxes import crop

    boxes = json.loads(boxes_file.read_text())
    truth = boxes_file.parent / boxes_file.name.replace("_boxes.json", "_truth")
    order = iter(boxes)
    current: dict = {}
    roi, segment = Engine.roi, ST.segment

    def true_roi(self, image, spacing, fill):
        roi(self, image, spacing, fill)  # the coarse network still runs
        case = next(order)
        current["truth"] = np.load(truth / f"{case}.npy", mmap_mode="r")
        return tuple(tuple(b) for b in boxes[case])

    def true_segment(ls, image, box, *args, **kwargs):
        out = segment(ls, image, box, *args, **kwargs)
        region = crop(current["truth"], box, 0)
        for head in out:  # the sure labels of a merge rule (head + SURE) as the labels
            lut = np.zeros(256, np.uint8)
            for k, flare_id in enumerate(ls.ids(head.removesuffix(ST.SURE))):
                if k:
                    lut[flare_id] = k
            out[head] = lut[region]
        return out

    Engine.roi, ST.segment = true_roi, true_segment

    def undo():
        Engine.roi, ST.segment = roi, segment

    return undo


#: Run in the fresh process: flare infer on the engine made realistic as above; at exit it
#: writes its peak RSS (VmHWM) to the file named by argv[3]. Not ru_maxrss: a child forked
#: from this (large) bench process starts with the parent's resident pages counted, and
#: getrusage keeps that across exec -- it reported 6.8 GB for a process that peaked at 2.2.
FRESH = """
import atexit, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from infer_speed import realistic_engine
realistic_engine(Path(sys.argv[2]))
def peak():
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    Path(sys.argv[3]).write_text(str(int(hwm.split()[1]) / 1024))
atexit.register(peak)
from flarecli.cli import main
main(sys.argv[4:])
"""


def run_backend(backend: str, inputs: Path, boxes: Path, model: Path, device: str,
                precision: str, calibration: Path | None = None) -> dict:
    """The folder in this process with a warm model: per-scan seconds and the profile."""
    from flarecli.core.inference.folder import PredictRun, input_cases, predict

    out = WORK / f"out_{backend}"
    shutil.rmtree(out, ignore_errors=True)
    cases, _ = input_cases(inputs, out, model)
    run = PredictRun("infer", model, out, device=device, backend=backend, precision=precision,
                     cache_dir=WORK / "cache", overwrite=True, calibration=calibration)
    # load (and compile) first on one scan, so that the timed run is warm; int8's
    # calibration capture runs the engine on other scans, which the realistic engine's
    # per-scan truths would not match, so that warm-up runs the engine as it is
    warm = WORK / f"warm_{backend}"
    shutil.rmtree(warm, ignore_errors=True)
    restore = realistic_engine(boxes) if calibration is None else (lambda: None)
    try:
        predict(PredictRun(**{**run.__dict__, "output_dir": warm}), cases[:1], "bench")
    finally:
        restore()
    restore = realistic_engine(boxes)
    try:
        t0 = time.perf_counter()
        results, record = predict(run, cases, "bench")
        wall = time.perf_counter() - t0 - record["model_load_seconds"]
    finally:
        restore()
    return {"wall_per_scan": wall / len(cases), "record": record, "results": results}


def import_seconds(importtime: str) -> dict[str, float]:
    """Seconds of each top-level package a process imported, from ``python -X importtime``'s
    lines (``import time: self | cumulative | name``, nesting shown by indentation)."""
    out: dict[str, float] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith("  ") or not cumulative.strip().isdigit():
            continue  # nested (its time is in its importer's), or the header
        top = name.strip().split(".")[0]
        out[top] = out.get(top, 0.0) + int(cumulative) / 1e6
    return out


def fresh_process(backend: str, inputs: Path, boxes: Path, model: Path, device: str,
                  precision: str, calibration: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one scan in a new process, cache warm; prints what its
    imports cost (torch is not among them once the OpenVINO models are cached)."""
    single = WORK / "single"
    shutil.rmtree(single, ignore_errors=True)
    single.mkdir(parents=True)
    shutil.copy(sorted(inputs.glob("*.nii.gz"))[0], single)
    peak = WORK / "single_peak_mb.txt"
    peak.unlink(missing_ok=True)
    command = ["-c", FRESH, str(Path(__file__).parent), str(boxes), str(peak), "infer",
               str(single), str(WORK / "single_out"), "--model", str(model), "--device",
               device, "--backend", backend, "--precision", precision, "--cache-dir",
               str(WORK / "cache"), "--overwrite"]
    if calibration is not None:
        command += ["--calibration", str(calibration)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    # once more with -X importtime (which slows imports a little) for what the imports cost
    found = subprocess.run([sys.executable, "-X", "importtime", *command], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    imports = import_seconds(found.stderr)
    biggest = sorted(imports.items(), key=lambda kv: -kv[1])[:6]
    print(f"\nfresh process imports ({backend}): {sum(imports.values()):.2f} s in all; "
          + ", ".join(f"{k} {v:.2f}" for k, v in biggest)
          + f"; torch {'imported' if 'torch' in imports else 'not imported'}")
    return wall, float(peak.read_text())


def report(backend: str, r: dict) -> None:
    rec = r["record"]
    s = rec["summary"]
    precisions = sorted({b["precision"] for b in rec["backends"].values()})
    print(f"\n[{backend}, {'/'.join(precisions)}] {r['wall_per_scan']:.2f} s per scan (folder "
          f"of {s['scans']}, warm); compute {s['mean_seconds']['compute']:.2f} s, read "
          f"{s['mean_seconds']['read']:.2f} s, write {s['mean_seconds']['write']:.2f} s "
          "(read and write overlap compute)")
    steps = s["mean_steps"]
    print("  steps: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    outside = sum(v for k, v in steps.items() if not k.startswith("network"))
    print(f"  outside the networks: {outside:.2f} s; peak RSS while computing "
          f"{s['max_scan_rss_mb']:.0f} MB; CPU area "
          f"{s['mean_cpu_area_pct_s']:.0f} %-s per scan")
    for scan in rec["scans"][:1]:
        if scan.get("gpu_peak_mb") is not None:
            print(f"  GPU peak {scan['gpu_peak_mb']:.0f} MB (torch), device max "
                  f"{scan['gpu_max_used_mb']:.0f} MB, area {scan['gpu_area_mb_s']:.0f} MB*s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trained", type=Path, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--backends", default=None, help="default: torch,openvino on the CPU")
    ap.add_argument("--calibration", type=int, default=4,
                    help="calibration scans for --precision int8")
    args = ap.parse_args()
    from flarecli.core.runtime import resolve_device, setup_torch

    print(cpu_description())
    inputs, boxes_file = make_inputs(args.scans)
    boxes = json.loads(boxes_file.read_text())
    for name, b in boxes.items():
        print(f"{name}: true organ box {' x '.join(str(e - a) for a, e in b)} voxels "
              "(z y x, canonical); each fine stage adds its margin")
    model = args.trained
    if model is None:
        model = WORK / "random_model"
        if not (model / "tumor" / "model.json").exists():
            random_bundles(model)
    setup_torch(resolve_device(args.device))
    backends = (args.backends or ("torch,openvino" if args.device == "cpu" else "torch")
                ).split(",")
    calibration = calibration_scans(args.calibration) if args.precision == "int8" else None
    results = {}
    for backend in backends:
        results[backend] = run_backend(backend, inputs, boxes_file, model, args.device,
                                       args.precision, calibration)
        report(backend, results[backend])
    last = backends[-1]
    fresh, rss = fresh_process(last, inputs, boxes_file, model, args.device, args.precision,
                               calibration)
    print(f"\none scan in a fresh process ({last}, cache warm): {fresh:.2f} s wall, peak RSS "
          f"{rss:.0f} MB")
    if args.device == "cpu" and {"torch", "openvino"} <= set(results):
        t, o = results["torch"]["wall_per_scan"], results["openvino"]["wall_per_scan"]
        print(f"cpu backends: torch {t:.2f} s/scan, openvino {o:.2f} s/scan ({t / o:.1f}x), "
              f"fresh process {fresh:.2f} s, peak RSS {rss:.0f} MB")
    else:
        w = results[last]["wall_per_scan"]
        print(f"{args.device} {last}: {w:.2f} s/scan, fresh process {fresh:.2f} s, peak RSS "
              f"{rss:.0f} MB")


if __name__ == "__main__":
    main()
