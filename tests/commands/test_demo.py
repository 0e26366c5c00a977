import json


def test_demo_smoke_runs_every_step(tmp_path, run_cli):
    res = run_cli("demo", tmp_path / "d", "--preset", "smoke", "--device", "cpu")
    assert res.code == 0, res.stderr
    for step in ("1. synthetic dataset", "2. audit", "3a. teacher", "3b. teacher", "4a. pseudo",
                 "4b. pseudo", "5. correction", "6a. student", "6b. student", "6c. student",
                 "7a. inference", "7b. evaluation"):
        assert step in res.stderr, step
    run = tmp_path / "d" / "run"
    for name in ("teacher/coarse", "teacher/organs", "student/coarse", "student/organs",
                 "student/tumor"):
        assert (run / name / "model.json").is_file(), name
    manifest = json.loads((run / "corrected" / "manifest.json").read_text())
    assert {c["kind"] for c in manifest["cases"]} >= {"CPL", "PL"}
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores["per_class"]) == {str(c) for c in range(1, 15)}
    assert scores["scored_cases"] == 2 and scores["organ_dsc"] is not None
    table = res.stdout.split("FLARE scores")[1]
    assert all(name in table for name in ("liver", "left_kidney", "tumor", "organs (mean of 13)"))
    res = run_cli("demo", tmp_path / "e", "--preset", "fast")
    assert res.code == 3 and "invalid preset" in res.stderr
