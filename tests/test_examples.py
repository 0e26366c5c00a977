"""The worked examples at smoke size: examples/pipeline.sh runs the loop step by step with
the CLI; examples/ablation.py trains, infers and scores every setting, examples/recipes.py
every recipe on one dataset, and their reports keep the notes written below their mark."""

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
    # the smoke preset, and a teacher trained with mirror augmentation (for --tta)
    env = {**os.environ, "FLARE": f"{sys.executable} -m flarecli", "DATA": str(data),
           "OUT": str(out), "DEVICE": "cpu", "PRESET": "smoke", "STUDENT_COARSE_OPT": "",
           "TEACHER_OPT": '--set stages.teacher.augmentation={"mirror":["SI","AP"]}'}
    res = subprocess.run(["bash", str(EXAMPLES / "pipeline.sh")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("teacher/coarse", "teacher/teacher", "student/coarse", "student/organs",
                 "student/tumor"):
        assert (out / name / "model.json").is_file(), name
    organs = json.loads((out / "student" / "organs" / "config.json").read_text())["run"]
    assert organs["init"].endswith("teacher/teacher")  # WARM=1: the student from the teacher
    tumor = json.loads((out / "student" / "tumor" / "config.json").read_text())["run"]
    assert tumor.get("init") is None  # the tumor stage (2-D, two heads) starts from scratch
    # the teacher trained with augmentation: its 4 mirror views were averaged
    record = json.loads((out / "pseudo" / "pseudolabel.json").read_text())
    assert record["tta_views"] == {"teacher": 4}
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scored_cases"] == 2
    # re-running the script works: it retrains, and keeps the other finished outputs
    res = subprocess.run(["bash", str(EXAMPLES / "pipeline.sh")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]


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
        (seed / "run" / "corrected" / "manifest.json").read_text())["cases"]}
    assert kinds >= {"CPL", "PL"}
    config = {s: json.loads((seed / "run" / "ablation" / s / "config.json").read_text())
              for s in ("organs_a", "organs_b", "organs_c", "organs_d", "tumor_e", "tumor_f")}
    # c leaves the pseudo-labels of unlabeled scans out, d takes them
    cases = {s: set(c["phases"][0]["cases"]) for s, c in config.items()}
    assert cases["organs_c"] < cases["organs_d"]
    # the tumor settings differ only in the method: supervised vs mean teacher
    assert config["tumor_e"]["stage"]["method"]["name"] == "supervised"
    assert config["tumor_f"]["stage"]["method"]["name"] == "mean_teacher"
    assert config["tumor_e"]["run"].get("init") is None  # both from scratch
    assert config["tumor_e"]["stage"]["network"] == config["tumor_f"]["stage"]["network"]
    text = report.read_text()
    assert "old table" not in text and text.rstrip().endswith("my notes stay")
    for row in ("| (a) |", "| (d) |", "| (f) |", "a < b:", "e < f:", "| 0 | "):
        assert row in text, row


def test_ablation_tumor_arm_alone(tmp_path, ablation):
    """--settings e,f trains b and d (the pseudo-labels, the organs under the lesions) and
    the two tumor models, nothing else; the report leaves the other rows out."""
    recipe = ablation.ablation_recipe("smoke", ("b", "d", "e", "f"))
    trained = [s["stage"] for s in recipe["pipeline"]["steps"] if s["kind"] == "train"]
    assert trained == ["coarse", "organs_b", "organs_d", "tumor_e", "tumor_f"]
    assert set(recipe["models"]) == {"b", "d", "e", "f"}
    tumor = recipe["models"]["f"]["outputs"][1]
    assert tumor["stage"] == "tumor_f" and tumor["hosts"] and tumor["replace_probability"] > 0.5


def test_recipes_comparison_smoke(tmp_path):
    from typer.testing import CliRunner

    spec = importlib.util.spec_from_file_location("recipes", EXAMPLES / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = tmp_path / "report.md"
    report.write_text(f"old table\n{module.NOTES_MARK}\nmy notes stay\n")
    args = [str(tmp_path / "run"), "--preset", "smoke", "--report", str(report),
            "--only", "stmt,fixed-size-c2f"]
    res = CliRunner().invoke(module.app, args)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) == {"stmt", "fixed-size-c2f"}
    # one dataset for both; each recipe's own run folder
    assert (tmp_path / "run" / "data" / "imagesTs").is_dir()
    for name, row in results.items():
        assert (tmp_path / "run" / name / "run" / "pipeline.json").is_file()
        assert row["train_seconds"] > 0 and row["pipeline_seconds"] >= row["train_seconds"]
        assert row["infer_seconds_per_scan"] > 0 and row["organ_dsc"] is not None
    # FLARE22's recipe has no tumor class: no tumor metric in its row
    assert results["fixed-size-c2f"]["tumor_dsc"] is None
    assert results["stmt"]["tumor_dsc"] is not None
    assert results["stmt"]["parameters_m"] > results["fixed-size-c2f"]["parameters_m"] > 0
    text = report.read_text()
    assert "old table" not in text and text.rstrip().endswith("my notes stay")
    row = next(line for line in text.splitlines() if line.startswith("| `fixed-size-c2f`"))
    assert row.split("|")[4].strip() == "–"
