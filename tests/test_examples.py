"""The worked examples at smoke size: examples/pipeline.sh runs the loop step by step with
the CLI; examples/ablation.py trains, infers and scores every setting, and its report keeps
the notes written below its mark."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = EXAMPLES / "ablation.py"


def test_pipeline_script_runs_the_loop(tmp_path, run_cli):
    data, out = tmp_path / "data", tmp_path / "run"
    assert run_cli("synth", data, "--train", 8, "--unlabeled", 2, "--test", 2, "--size",
                   48).code == 0
    tiny = "--model tiny --epochs 1 --iterations 2 --optimizer adamw --lr 3e-3"
    env = {**os.environ, "FLARE": f"{sys.executable} -m flarecli", "DATA": str(data),
           "OUT": str(out), "DEVICE": "cpu", "MODEL": "tiny", "COARSE": "16", "FINE": "16",
           "COARSE_OPT": tiny, "STUDENT_COARSE_OPT": tiny, "TEACHER_OPT": tiny,
           "STUDENT_OPT": tiny, "TUMOR_OPT": tiny}
    res = subprocess.run(["bash", str(EXAMPLES / "pipeline.sh")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("teacher/coarse", "teacher/organs", "student/coarse", "student/organs",
                 "student/tumor"):
        assert (out / name / "model.json").is_file(), name
    tumor = json.loads((out / "student" / "tumor" / "config.json").read_text())["config"]
    assert tumor["init"].endswith("student/organs")  # WARM=1: the tumor model from organs
    # the tiny teacher trained with augmentation: its 4 mirror views were averaged
    record = json.loads((out / "pseudo" / "pseudolabel.json").read_text())
    assert record["tta_views"] == {"organs": 4}
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scored_cases"] == 2


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_smoke_runs_every_setting(tmp_path, ablation):
    from typer.testing import CliRunner

    report = tmp_path / "report.md"
    report.write_text(f"old table\n{ablation.NOTES_MARK}\nmy notes stay\n")
    res = CliRunner().invoke(ablation.app, [str(tmp_path / "run"), "--preset", "smoke",
                                            "--device", "cpu", "--report", str(report)])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())["0"]
    assert set(results) == set("abcdef")
    for key in "abcdef":
        assert results[key]["scored_cases"] == 2, key
    seed = tmp_path / "run" / "seed0"
    kinds = {c["kind"] for c in json.loads(
        (seed / "runs" / "corrected" / "manifest.json").read_text())["cases"]}
    assert kinds >= {"CPL", "PL"}
    no_pl = json.loads((seed / "runs" / "corrected" / "manifest-fl-cpl.json").read_text())
    assert "PL" not in {c["kind"] for c in no_pl["cases"]}
    # the tumor settings differ only in the mean-teacher weight
    cfg = {k: json.loads((seed / "runs" / k / "tumor" / "config.json").read_text())["config"]
           for k in "ef"}
    assert (cfg["e"]["mt_weight"], cfg["f"]["mt_weight"]) == (0.0, 1.0)
    text = report.read_text()
    assert "old table" not in text and text.rstrip().endswith("my notes stay")
    for row in ("| (a) |", "| (d) |", "| (f) |", "a < b:", "e < f:"):
        assert row in text, row
