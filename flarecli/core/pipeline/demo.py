"""``flare demo`` as a function: a recipe's pipeline on a fresh synthetic dataset, then
inference on its test split and FLARE's scores.

``OUT/data`` holds the dataset (``flare synth`` with the recipe's ``demo`` sizes), ``OUT/run``
the pipeline's artefacts (:mod:`flarecli.core.pipeline.runner`), the test predictions
(``OUT/run/predictions``) and the scores (``OUT/run/scores.json`` / ``scores.csv``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flarecli.core.pipeline.runner import (
    PipelineProgress,
    PipelineResult,
    PipelineRun,
    RunOptions,
    run_pipeline,
)
from flarecli.core.recipes.spec import SynthConfig

#: The preset ``flare demo`` runs unless told otherwise: minutes on a laptop CPU (a recipe's
#: own default, what ``flare train`` takes, is usually ``paper``: a GPU for hours).
DEMO_PRESET = "cpu"


@dataclass
class DemoRun(RunOptions):
    """``flare demo``: the pipeline of recipe ``recipe`` (a built-in name or a file) at
    ``preset`` on a fresh synthetic dataset, every artefact under ``out``, with ``overrides``
    (KEY=VALUE, as ``flare train --set``); the options are the pipeline's own
    (:class:`~flarecli.core.pipeline.runner.RunOptions`)."""

    recipe: str
    preset: str
    out: Path
    overrides: tuple[str, ...] = ()


@dataclass
class DemoResult:
    pipeline: PipelineResult
    scores: dict[str, Any]
    scores_path: Path


def make_dataset(config: SynthConfig, folder: Path, seed: int, workers: int) -> None:
    """The synthetic dataset (resumes: finished cases are kept)."""
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.synth import dataset as synth

    jobs = synth.prepare(config, seed, folder, overwrite=False)
    synth.finish(config, seed, folder, list(imap_ordered(synth.make_case, jobs, workers)))


def evaluate_folder(pred_dir: Path, gt_dir: Path, workers: int) -> tuple[dict[str, Any], list]:
    """FLARE's scores (exact protocol) of a prediction folder; (summary, per-case results)."""
    from flarecli.core.metrics import evaluate
    from flarecli.core.parallel import imap_ordered

    plan = evaluate.plan_jobs(pred_dir, gt_dir, "exact", 0.2)
    results = plan.failed + list(imap_ordered(evaluate.evaluate_case, plan.jobs, workers))
    return evaluate.summarize(results, "exact", 0.2), results


def run_demo(run: DemoRun, progress: PipelineProgress | None = None) -> DemoResult:
    from flarecli.core.inference.folder import PredictRun, input_cases, predict
    from flarecli.core.io.files import write_text_atomic
    from flarecli.core.metrics.evaluate import CSV_COLUMNS, csv_rows
    from flarecli.core.recipes.load import load_recipe

    progress = progress or PipelineProgress()
    recipe = load_recipe(run.recipe, run.preset, list(run.overrides))
    data, out = Path(run.out) / "data", Path(run.out) / "run"
    progress.step("synth", f"synthetic dataset ({recipe.demo.train} training, "
                           f"{recipe.demo.unlabeled} unlabeled, {recipe.demo.test} test cases)")
    make_dataset(recipe.demo, data, run.seed, run.workers)
    result = run_pipeline(PipelineRun(recipe, data, out, **run.run_options()), progress)
    progress.step("infer", f"inference on the test split with {result.final}")
    pred = out / "predictions"
    cases, _ = input_cases(data / "imagesTs", pred, result.final)
    predict(PredictRun("infer", result.final, pred, device=run.device, overwrite=True,
                       graph=recipe.pipeline.final_graph, argv=["demo"]), cases,
            str((data / "imagesTs").resolve()),
            notes=progress.note)
    progress.step("evaluate", "FLARE DSC and NSD against the truth")
    scores, results = evaluate_folder(pred, data / "labelsTs", run.workers)
    path = out / "scores.json"
    write_text_atomic(path, json.dumps(scores, indent=2) + "\n")
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(results))
    write_text_atomic(out / "scores.csv", buf.getvalue())
    return DemoResult(result, scores, path)
