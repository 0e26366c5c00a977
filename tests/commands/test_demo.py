import json


def test_demo_smoke_runs_every_step(tmp_path, run_cli):
    res = run_cli("demo", tmp_path / "d", "--preset", "smoke", "--device", "cpu")
    assert res.code == 0, res.stderr
    for step in ("synth: synthetic dataset", "audit: audit the dataset",
                 "teacher-coarse: train teacher/coarse", "teacher-organs: train teacher/teacher",
                 "pseudo: pseudo-labels from teacher", "corrected: correct pseudo (stmt)",
                 "student-coarse: train student/coarse", "student-organs: train student/organs",
                 "student-tumor: train student/tumor", "infer: inference on the test split",
                 "evaluate: FLARE DSC and NSD"):
        assert step in res.stderr, step
    run = tmp_path / "d" / "run"
    for name in ("teacher/coarse", "teacher/teacher", "student/coarse", "student/organs",
                 "student/tumor"):
        assert (run / name / "model.json").is_file(), name
    manifest = json.loads((run / "corrected" / "manifest.json").read_text())
    assert {c["kind"] for c in manifest["cases"]} >= {"CPL", "PL"}
    scores = json.loads((run / "scores.json").read_text())
    assert set(scores["per_class"]) == {str(c) for c in range(1, 15)}
    assert scores["scored_cases"] == 2 and scores["organ_dsc"] is not None
    table = res.stdout.split("FLARE scores")[1]
    assert all(name in table for name in ("liver", "left_kidney", "tumor", "organs (mean of 13)"))
    assert "scores near 0 are expected" in res.stdout
    # a re-run keeps the finished steps
    again = run_cli("demo", tmp_path / "d", "--preset", "smoke", "--device", "cpu")
    assert again.code == 0 and again.stderr.count("done before (unchanged)") == 8
    # --set as in flare train; a change to an inference graph alone retrains nothing, and the
    # demo scores the model with the new graph
    graph = run_cli("demo", tmp_path / "d", "--preset", "smoke", "--device", "cpu",
                    "--set", "models.student.postprocess.min_tumor_mm3=5000")
    assert graph.code == 0 and graph.stderr.count("done before (unchanged)") == 8
    recipe = json.loads((run / "student" / "recipe.json").read_text())
    assert recipe["models"]["student"]["postprocess"]["min_tumor_mm3"] == 5000
    bad = run_cli("demo", tmp_path / "d", "--preset", "smoke", "--set", "stages.nope.epochs=2")
    assert bad.code == 5 and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
    assert "stages.nope" in bad.stderr and "Traceback" not in bad.stderr
    res = run_cli("demo", tmp_path / "e", "--preset", "fast")
    assert res.code == 5 and "'fast' is not a preset" in res.stderr
    assert "presets: paper, cpu, smoke" in res.stderr
