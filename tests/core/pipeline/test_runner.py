"""The generic pipeline runner: every step through the core API, resume by fingerprints."""

import json

import pytest

from flarecli.core.pipeline.demo import DemoRun, make_dataset, run_demo
from flarecli.core.pipeline.runner import PipelineProgress, PipelineRun, run_pipeline
from flarecli.core.recipes.load import load_recipe


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke") / "data"
    make_dataset(load_recipe("stmt", "smoke").demo, root, seed=0, workers=1)
    return root


def test_a_second_run_skips_the_finished_steps_and_redoes_what_changed(smoke_data, tmp_path):
    recipe = load_recipe("stmt", "smoke")
    done = []
    progress = PipelineProgress(done=done.append)
    first = run_pipeline(PipelineRun(recipe, smoke_data, tmp_path / "run", device="cpu"),
                         progress)
    names = [s.name for s in recipe.pipeline.steps]
    assert [r.name for r in first.steps] == ["audit", *names]
    assert not any(r.skipped for r in first.steps)
    assert first.final == tmp_path / "run" / "student"
    assert (first.final / "recipe.json").is_file() and (first.final / "tumor").is_dir()
    manifest = json.loads((tmp_path / "run" / "corrected" / "manifest.json").read_text())
    assert manifest["summary"]["CPL"] > 0 and manifest["summary"]["PL"] == 2
    weights = (first.final / "organs" / "weights_final.pt").read_bytes()

    again = run_pipeline(PipelineRun(recipe, smoke_data, tmp_path / "run", device="cpu"))
    assert all(r.skipped for r in again.steps)
    assert (first.final / "organs" / "weights_final.pt").read_bytes() == weights

    # a change to the student's organ step redoes that step and every later one (a change to
    # stages.organs would also reach the teacher and tumor stages, which inherit from it)
    changed = load_recipe("stmt", "smoke",
                          ['pipeline.steps.student-organs.set={"iterations": 3}'])
    third = run_pipeline(PipelineRun(changed, smoke_data, tmp_path / "run", device="cpu"))
    skipped = {r.name: r.skipped for r in third.steps}
    assert all(skipped[n] for n in ("audit", "teacher-coarse", "teacher-organs", "pseudo",
                                    "corrected", "student-coarse"))
    assert not skipped["student-organs"] and not skipped["student-tumor"]
    # student-tumor's stage is unchanged, but a step before it changed: its finished checkpoint
    # belongs to the earlier run (other data, another init) and is trained over, not resumed
    notes = {r.name: r.note or "" for r in third.steps}
    assert "(resumed)" not in notes["student-tumor"]
    assert "(resumed)" not in notes["student-organs"]


def test_a_run_that_changes_only_a_graph_gives_the_model_folder_that_graph(smoke_data,
                                                                          tmp_path):
    """The graphs are no part of a training step's fingerprint, so a re-run that changes only
    one trains nothing; the model folder's recipe.json, which flare infer reads, still takes
    the new graph (it used to keep the one of the first run)."""
    run = tmp_path / "run"
    run_pipeline(PipelineRun(load_recipe("stmt", "smoke"), smoke_data, run, device="cpu"))
    weights = (run / "student" / "tumor" / "weights_final.pt").read_bytes()
    changed = load_recipe("stmt", "smoke", ["models.student.outputs.1.replace_probability=0.9",
                                            "models.student.postprocess.min_tumor_mm3=123"])
    again = run_pipeline(PipelineRun(changed, smoke_data, run, device="cpu"))
    assert all(r.skipped for r in again.steps)
    graph = json.loads((run / "student" / "recipe.json").read_text())["models"]["student"]
    assert graph["outputs"][1]["replace_probability"] == 0.9
    assert graph["postprocess"]["min_tumor_mm3"] == 123
    assert (run / "student" / "tumor" / "weights_final.pt").read_bytes() == weights


def test_an_interrupted_training_step_resumes(smoke_data, tmp_path):
    from flarecli.core.training.options import Progress

    recipe = load_recipe("stmt", "smoke", ["stages.coarse.epochs=3"])

    class Stop(Exception):
        pass

    def stop(record):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_pipeline(PipelineRun(recipe, smoke_data, tmp_path / "run", device="cpu"),
                     PipelineProgress(train=Progress(epoch=stop)))
    reports = []
    run_pipeline(PipelineRun(recipe, smoke_data, tmp_path / "run", device="cpu"),
                 PipelineProgress(done=reports.append))
    first = {r.name: r for r in reports}
    assert first["audit"].skipped and "(resumed)" in first["teacher-coarse"].note
    lines = (tmp_path / "run" / "teacher" / "coarse" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_the_demo_runs_a_recipe_through_the_api(tmp_path):
    result = run_demo(DemoRun("stmt", "smoke", tmp_path / "demo", device="cpu"))
    assert result.scores_path.is_file()
    assert result.scores["cases"] == 2 and result.scores["organ_dsc"] is not None
    assert len(list((tmp_path / "demo" / "run" / "predictions").glob("*.nii.gz"))) == 2
