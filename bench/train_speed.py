"""Training throughput of the fine stage: iterations/s, peak GPU memory, data-wait share.

On the lent GPU (the issue's figure): paper settings, 192^3, batch 2, AMP:

    python bench/train_speed.py --device cuda --size 192 --model student --batch-size 2

(the stmt recipe's organ stage, paper preset, with the options given here)

On this CPU a small setting shows the same figures at toy scale (default). It generates a
small synthetic dataset once under bench/out/, trains --epochs x --iterations steps with
augmentation on, and reads the figures from the run's metrics.jsonl (the first epoch, which
includes warm-up, is reported separately).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from _common import ROOT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--synth-size", type=int, default=96)
    args = ap.parse_args()
    data = ROOT / "bench" / "out" / f"train_data_{args.synth_size}"
    flare = [sys.executable, "-m", "flarecli"]
    if not (data / "synth.json").exists():
        subprocess.run(flare + ["synth", str(data), "--train", "10", "--unlabeled", "0",
                                "--test", "0", "--size", str(args.synth_size)],
                       check=True, stdout=subprocess.DEVNULL)
    out = ROOT / "bench" / "out" / "train_run"
    shutil.rmtree(out, ignore_errors=True)
    cmd = flare + ["train", str(data), "--out", str(out), "--stage", "organs", "--model",
                   args.model, "--size", str(args.size), "--epochs",
                   str(args.epochs), "--iterations", str(args.iterations), "--batch-size",
                   str(args.batch_size), "--device", args.device, "--val-fraction", "0",
                   "--augment"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(x) for x in (out / "organs" / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        its = args.iterations / r["train_seconds"]
        gpu = f", peak GPU memory {r['gpu_peak_mb']} MB" if "gpu_peak_mb" in r else ""
        print(f"epoch {r['epoch']}: {its:.2f} it/s ({args.batch_size} x {args.size}^3, "
              f"{args.model}, {args.device}), waiting for data "
              f"{100 * r['data_wait_fraction']:.1f} % of the time{gpu}")


if __name__ == "__main__":
    main()
