"""CUDA paths (autocast, GradScaler, on-GPU augmentation, GPU memory sampling).

Skipped without CUDA; on a GPU machine run ``python -m pytest -m gpu``.
"""

import json

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_train_and_infer_on_cuda(tmp_path, run_cli):
    from flarecli.core.training.run import train
    from tests.conftest import blob_case, tiny_recipe, train_run
    from tests.core.inference.test_engine import GRIDS, scans

    for i in range(3):
        blob_case(tmp_path / "data", f"b{i}", i, tumor=True)
    out = tmp_path / "model"
    recipe = tiny_recipe(epochs=1, iterations=3, augmentation={"mirror": ["SI", "AP"]})
    for stage in ("coarse", "organs", "tumor"):
        train(train_run(tmp_path / "data", out, stage=stage, recipe=recipe, device="cuda",
                        workers=1))
    record = json.loads((out / "organs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["gpu_peak_mb"] > 0 and np.isfinite(record["loss"])
    scans(tmp_path / "in", np.random.default_rng(0))
    res = run_cli("infer", tmp_path / "in", tmp_path / "out", "--model", out, "--device", "cuda",
                  "--profile", tmp_path / "p.json")
    assert res.code == 0, res.stderr
    prof = json.loads((tmp_path / "p.json").read_text())
    assert len(prof["scans"]) == len(GRIDS)
    for s in prof["scans"]:
        assert s["gpu_peak_mb"] > 0 and s["gpu_max_used_mb"] > 0
        assert s["gpu_area_mb_s"] is not None
    res = run_cli("pseudolabel", tmp_path / "in", tmp_path / "pl", "--model", out, "--device",
                  "cuda", "--tta")
    assert res.code == 0, res.stderr
