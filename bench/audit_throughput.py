"""flare audit throughput on realistic-size synthetic cases (cases/s, peak RSS).

    python bench/audit_throughput.py [--cases 50] [--workers 1] [--data bench/out/audit50]

Generates the dataset once with `flare synth --size 512` (kept for later runs), then times
`flare audit` in a child process and reports its peak resident memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "out" / "audit50")
    args = ap.parse_args()
    flare = [sys.executable, "-m", "flarecli"]
    t0 = time.perf_counter()
    subprocess.run(flare + ["synth", str(args.data), "--size", "512", "--train",
                            str(args.cases), "--unlabeled", "0", "--test", "0", "--workers",
                            "2"], check=True, stdout=subprocess.DEVNULL)
    print(f"synth (or reuse): {time.perf_counter() - t0:.0f} s")
    # a fresh interpreter runs the audit, so its peak RSS is the audit's alone
    proc = subprocess.run([sys.executable, __file__, "--measure", str(args.data),
                           str(args.workers)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    seconds, rss_self, rss_workers = (float(v) for v in proc.stdout.split()[-3:])
    gb = sum(p.stat().st_size for p in args.data.rglob("*.nii.gz")) / 1e9
    print(f"audit: {args.cases} cases ({gb:.1f} GB gz) in {seconds:.1f} s = "
          f"{args.cases / seconds:.2f} cases/s with {args.workers} worker(s); peak RSS "
          f"{rss_self:.0f} MB (main process), {rss_workers:.0f} MB (largest worker)")


def measure(data: str, workers: str) -> None:
    from flarecli.cli import main as flare_main

    t0 = time.perf_counter()
    try:
        flare_main(["audit", data, "--workers", workers, "--json", f"{data}/audit.json"])
    except SystemExit as e:
        if e.code not in (0, 4, None):
            raise
    print(time.perf_counter() - t0, peak_rss_mb(), peak_rss_mb(children=True))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3])
    else:
        main()
