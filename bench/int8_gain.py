"""Would int8 post-training quantization pay? OpenVINO default precision against NNCF int8 on
the stmt paper student networks (coarse 128^3, organs 192^3).

    pip install nncf            # not a flare dependency: this script decides whether it becomes one
    python bench/int8_gain.py [--repeats 3] [--calibration 8]
    python bench/int8_gain.py --data DATASET --trained NAME=MODEL_DIR [...] [--calibration 8]

Speed does not depend on the weights, so the networks have random weights and the
calibration inputs are normalised-CT-like noise. flare adds int8 only if it is at least 1.5x
faster than the default precision and organ DSC drops by at most 0.01 on trained models:
``--trained`` checks the second with flare's own ``--precision int8``, calibrated on the
first ``--calibration`` training scans of DATASET (a ``flare synth`` folder: imagesTr):
OpenVINO default precision and int8 segment imagesTs, scored against labelsTs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, cpu_description


def timed(compiled, x, repeats: int) -> float:
    compiled(x)  # first call allocates
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled(x)
        best = min(best, time.perf_counter() - t0)
    return best


def int8_dsc(name: str, model: Path, data: Path, calibration: int) -> tuple[float, float]:
    """(organ DSC at OpenVINO's default precision, organ DSC with flare's ``--precision int8``
    calibrated on the first ``calibration`` training scans) on the test split."""
    import shutil

    from flarecli.core.inference.folder import PredictRun, input_cases, predict
    from flarecli.core.pipeline.demo import evaluate_folder

    work = ROOT / "bench" / "out" / "int8" / name
    shutil.rmtree(work, ignore_errors=True)
    calib = work / "calibration"
    calib.mkdir(parents=True)
    for image in sorted((data / "imagesTr").glob("*.nii.gz"))[:calibration]:
        (calib / image.name).symlink_to(image.resolve())
    scores = []
    for precision in ("auto", "int8"):
        out = work / precision
        cases, _ = input_cases(data / "imagesTs", out, model)
        predict(PredictRun("infer", model, out, device="cpu", backend="openvino",
                           precision=precision, cache_dir=work / "cache", overwrite=True,
                           calibration=calib if precision == "int8" else None), cases, "bench")
        scores.append(evaluate_folder(out, data / "labelsTs", 2)[0]["organ_dsc"])
    print(f"{name}: organ DSC default {scores[0]:.4f}, int8 {scores[1]:.4f} "
          f"({scores[1] - scores[0]:+.4f}; calibrated on {calibration} training scans)")
    return scores[0], scores[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=8)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--trained", action="append", default=[], help="NAME=MODEL_DIR")
    args = ap.parse_args()
    if args.trained:
        print(cpu_description())
        drops = [int8_dsc(n, Path(m), args.data, args.calibration)
                 for n, m in (t.split("=", 1) for t in args.trained)]
        worst = max(d - q for d, q in drops)
        print(f"int8 organ DSC loss: worst {worst:+.4f} over {len(drops)} models (bar: 0.01)")
        return
    import nncf
    import numpy as np
    import openvino as ov
    import torch

    from flarecli.core.inference.openvino import _compile, convert, core
    from flarecli.core.recipes.load import load_recipe
    from flarecli.core.runtime import usable_cpus
    from flarecli.core.training.network import build_network

    print(cpu_description())
    print(f"openvino {ov.__version__}, nncf {nncf.__version__}")
    recipe = load_recipe("stmt", "paper")
    config = {"INFERENCE_NUM_THREADS": usable_cpus(), "PERFORMANCE_HINT": "LATENCY"}
    rng = np.random.default_rng(0)
    for name in ("coarse", "organs"):
        stage = recipe.stages[name]
        torch.manual_seed(0)
        model, _ = build_network(stage)
        size = tuple(stage.geometry.size_zyx)
        shape = (1, 1, *size)
        heads = tuple(stage.network.heads)
        compiled = _compile(model.eval(), heads, shape, config)
        x = rng.normal(0, 1, shape).astype(np.float32)
        t_default = timed(compiled, x, args.repeats)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        converted = convert(model, heads, shape)
        data = nncf.Dataset([rng.normal(0, 1, shape).astype(np.float32)
                             for _ in range(args.calibration)])
        t0 = time.perf_counter()
        quantized = nncf.quantize(converted, data, subset_size=args.calibration)
        t_quant = time.perf_counter() - t0
        int8 = core().compile_model(quantized, "CPU", config)
        t_int8 = timed(int8, x, args.repeats)
        agree = float((int8(x)[0].argmax(1) == compiled(x)[0].argmax(1)).mean())
        print(f"{name} at {size[0]}^3: default ({precision}) {t_default:.2f} s, int8 "
              f"{t_int8:.2f} s ({t_default / t_int8:.2f}x; quantization took {t_quant:.0f} s); "
              f"argmax agreement with random weights {100 * agree:.1f} %")


if __name__ == "__main__":
    main()
