"""examples/ablation.py at the smoke size: every setting trains, infers and is scored, and
the report keeps the notes written below its mark."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "ablation.py"


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
