"""flare infer speed and memory on realistic-size scans (512 x 512 x ~300).

    python bench/infer_speed.py [--scans 3] [--device cpu|cuda] [--trained MODEL_DIR]

Without --trained, paper-size bundles with random weights are written (student Res-UNet:
coarse 128^3, organs and tumor 192^3), which is what speed depends on. Prints, per scan and
on average: read / compute / write / total seconds, peak GPU memory and the area under the
GPU memory-time curve (FLARE's efficiency measure, sampled every 0.1 s) from `--profile`;
the folder's throughput (scans/s); and the wall time of one fresh `flare infer` process on a
single scan, as the FLARE organisers measure it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, realistic_case


def random_bundles(folder: Path) -> None:
    """The stmt paper model (student Res-UNet: coarse 128^3, organs and tumor 192^3) with
    random weights: speed does not depend on the weights."""
    import torch

    from flarecli.core.io.bundle import save_weights, write_bundle
    from flarecli.core.preprocessing.intensity import window
    from flarecli.core.recipes.load import load_recipe
    from flarecli.core.recipes.typed import to_json
    from flarecli.core.training.loop import build_network, write_model_recipe

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trained", type=Path, default=None)
    args = ap.parse_args()
    from flarecli.core.io.nifti import write_volume

    work = ROOT / "bench" / "out" / "infer"
    inputs = work / f"in{args.scans}"
    if not inputs.is_dir():
        tmp = work / "tmp_in"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(args.scans):
            image, _, geometry, _ = realistic_case(300 + i, slices=(290, 310))
            write_volume(tmp / f"scan_{i:03d}_0000.nii.gz", image, geometry)
        tmp.rename(inputs)
    model = args.trained
    if model is None:
        model = work / "random_model"
        if not (model / "tumor" / "model.json").exists():
            random_bundles(model)
    flare = [sys.executable, "-m", "flarecli", "infer"]
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(flare + [str(inputs), str(out), "--model", str(model), "--device",
                            args.device, "--profile", str(work / "profile.json")], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    prof = json.loads((work / "profile.json").read_text())
    for s in prof["scans"]:
        sec = s["seconds"]
        gpu = ""
        if s.get("gpu_peak_mb") is not None:
            gpu = (f"  GPU peak {s['gpu_peak_mb']:.0f} MB (torch), device max "
                   f"{s['gpu_max_used_mb']:.0f} MB, area {s['gpu_area_mb_s']:.0f} MB*s")
        print(f"{s['case']}: read {sec['read']:.2f} s  compute {sec['compute']:.2f} s "
              f"(coarse {sec['coarse']:.2f}, fine {sec['fine']:.2f})  write {sec['write']:.2f} s"
              f"  total {sec['total']:.2f} s{gpu}")
    m = prof["summary"]["mean_seconds"]
    print(f"mean per scan: {m['total']:.2f} s (read {m['read']:.2f}, compute {m['compute']:.2f}, "
          f"write {m['write']:.2f}); folder of {args.scans}: {wall:.1f} s wall incl. start-up "
          f"= {args.scans / wall:.2f} scans/s; peak RSS {prof['summary']['peak_rss_mb']:.0f} MB "
          f"[{args.device}]")
    single = work / "single"
    shutil.rmtree(single, ignore_errors=True)
    single.mkdir(parents=True)
    shutil.copy(next(inputs.glob("*.nii.gz")), single)
    t0 = time.perf_counter()
    subprocess.run(flare + [str(single), str(work / "single_out"), "--model", str(model),
                            "--device", args.device, "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"one scan in a fresh process: {time.perf_counter() - t0:.2f} s wall [{args.device}]")


if __name__ == "__main__":
    main()
