"""Helpers shared by the bench scripts (run them from the repository root)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so `tests.reference` imports when run as a script
    sys.path.insert(0, str(ROOT))


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def realistic_case(seed: int, slices: tuple[int, int] = (260, 340)):
    """A realistic-size (512 x 512 x ~300) synthetic case: (image, label, geometry, seconds)."""
    from flarecli.core.io.geometry import Geometry
    from flarecli.core.synth.anatomy import sample_case_spec
    from flarecli.core.synth.phantom import render_case

    rng = np.random.default_rng(seed)
    while True:
        spec = sample_case_spec(rng, size=512, n_tumors=2)
        if slices[0] <= spec.grid.shape_zyx[0] <= slices[1]:
            break
    t0 = time.perf_counter()
    image, label = render_case(spec)
    g = spec.grid
    geometry = Geometry(tuple(g.shape_zyx), tuple(g.spacing_xyz), tuple(g.origin_xyz),
                        tuple(g.direction))
    return image, label, geometry, time.perf_counter() - t0


def imperfect_prediction(label: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: shifted by a voxel or two, an organ missed, a false tumor."""
    rng = np.random.default_rng(seed)
    pred = np.roll(label, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
    pred[pred == 9] = 0  # gallbladder missed
    z, y, x = (s // 2 for s in pred.shape)
    pred[z - 3:z + 3, y - 8:y + 8, x - 8:x + 8] = 14
    return pred


def cpu_description() -> str:
    """lscpu's model name, the CPUs this process may use and the flags that matter to speed
    (every CPU figure is quoted with these)."""
    import os
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "CPU: unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = set(fields.get("Flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = [f for f in wanted if f in flags]
    return (f"CPU: {model}; {len(os.sched_getaffinity(0))} usable CPUs; flags: "
            f"{' '.join(have) or 'none of ' + ' '.join(wanted)}")


def demo_pipeline(demo: Path) -> tuple[dict, Path]:
    """A ``flare demo`` folder's pipeline record (recipe, preset, ...) and its final model."""
    record = json.loads((demo / "run" / "pipeline.json").read_text())
    return record, demo / "run" / record.get("final", "student")
