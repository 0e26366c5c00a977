"""Independent jobs side by side in CPU-pinned lanes, and which pipeline steps run so."""

import os
import time

import pytest

from flarecli.core.errors import FlareError, InputError
from flarecli.core.pipeline import lanes
from flarecli.core.pipeline.runner import PipelineRun, _groups, _needs, _Planned
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.load import load_recipe


def test_the_plan_splits_cpus_into_shares_and_deals_the_jobs_in_turn():
    assert lanes.plan(3, [0, 1]) == [([0], [0, 2]), ([1], [1])]
    assert lanes.plan(2, list(range(16))) == [(list(range(8)), [0]),
                                              (list(range(8, 16)), [1])]
    assert lanes.plan(3, [0, 1, 2, 3, 4]) == [([0], [0]), ([1, 2], [1]), ([3, 4], [2])]
    assert lanes.plan(1, [4, 5]) == [([4, 5], [0])]


def report_cpus(job, emit):
    """A job for the lanes (module level: a spawned process imports it)."""
    emit("note", f"{job} on {sorted(os.sched_getaffinity(0))}")
    if job == "bad input":
        raise InputError("case.nii.gz: not a volume", hint="check the file")
    if job == "bug":
        raise ZeroDivisionError("a bug")
    if job == "sleep":
        time.sleep(120)
    from flarecli.core.runtime import usable_cpus

    return sorted(os.sched_getaffinity(0)), usable_cpus()


needs_two_cpus = pytest.mark.skipif(len(lanes.cpu_set()) < 2, reason="needs two CPUs")


@needs_two_cpus
def test_each_lane_runs_its_jobs_on_its_own_cpus_and_reports_back():
    cpus = lanes.cpu_set()[:2]
    events = []
    jobs = [("a", "a"), ("b", "b"), ("c", "c")]
    planned = [(share, [jobs[i] for i in indices]) for share, indices in lanes.plan(3, cpus)]
    out = lanes.run_lanes(report_cpus, planned,
                          lambda kind, key, payload: events.append((kind, key, payload)))
    assert out["a"][0] == ([cpus[0]], 1) and out["c"][0] == ([cpus[0]], 1)
    assert out["b"][0] == ([cpus[1]], 1)
    assert all(seconds >= 0 for _, seconds in out.values())
    for key, cpu in (("a", cpus[0]), ("b", cpus[1]), ("c", cpus[0])):
        mine = [(kind, payload) for kind, k, payload in events if k == key]
        assert [kind for kind, _ in mine] == ["start", "note", "done"]
        assert mine[1][1] == f"{key} on [{cpu}]"
    order_a = [k for kind, k, _ in events if kind == "start" and k in "ac"]
    assert order_a == ["a", "c"]  # a lane takes its jobs in order


@needs_two_cpus
def test_a_job_error_comes_back_as_flare_s_error_and_stops_the_other_lane():
    cpus = lanes.cpu_set()[:2]
    t0 = time.monotonic()
    with pytest.raises(FlareError) as caught:
        lanes.run_lanes(report_cpus, [([cpus[0]], [("slow", "sleep")]),
                                      ([cpus[1]], [("bad", "bad input")])], lambda *a: None)
    assert time.monotonic() - t0 < 60  # the sleeping lane was ended, not waited for
    assert caught.value.exit_code == InputError.exit_code
    assert str(caught.value) == "case.nii.gz: not a volume"
    assert caught.value.hint == "check the file"
    with pytest.raises(lanes.LaneError, match="ZeroDivisionError: a bug"):
        lanes.run_lanes(report_cpus, [([cpus[0]], [("ok", "ok"), ("bug", "bug")]),
                                      ([cpus[1]], [])], lambda *a: None)


def _planned(recipe):
    return [_Planned(s.name, s.name, s, "") for s in recipe.pipeline.steps]


@needs_two_cpus
def test_train_steps_marked_parallel_are_grouped_on_the_cpu_only(tmp_path):
    def groups(recipe, device="cpu"):
        run = PipelineRun(recipe, tmp_path, tmp_path / "run", device=device)
        return [[p.name for p in g] for g in _groups(run, _planned(recipe))]

    singles = [[s.name] for s in load_recipe("stmt", "paper").pipeline.steps]
    assert groups(load_recipe("stmt", "paper")) == singles  # nothing marked
    # the cpu preset marks the student's three stages; the teacher's two are left alone
    # (one of them is twice the other: on one core each the long one ends later)
    cpu = load_recipe("stmt", "cpu")
    assert groups(cpu) == [*singles[:4], ["student-coarse", "student-organs", "student-tumor"]]
    # marked steps that need one another are not grouped
    chained = load_recipe("stmt", "cpu", ["pipeline.steps.teacher-coarse.parallel=true",
                                          "pipeline.steps.teacher-organs.parallel=true",
                                          "pipeline.steps.student-organs.init=student/coarse"])
    assert groups(chained) == [["teacher-coarse", "teacher-organs"], ["pseudo"],
                               ["corrected"], ["student-coarse"],
                               ["student-organs", "student-tumor"]]
    try:
        gpu_groups = groups(cpu, "cuda")
    except InputError:  # no CUDA here: refused as a bad --device before any step runs
        return
    assert gpu_groups == singles  # one GPU trains one step at a time


def test_a_step_waits_for_the_model_it_starts_from_or_trains_again():
    coarse = S.TrainStep(name="c", stage="coarse", model="teacher", source="audit")
    organs = S.TrainStep(name="o", stage="organs", model="student", source="audit")
    assert not _needs(organs, coarse)
    assert _needs(S.TrainStep(name="s", stage="coarse", model="student", source="audit",
                              init="teacher/coarse"), coarse)
    assert _needs(S.RetrainStep(name="r", stage="coarse", model="teacher", source="audit"),
                  coarse)
