"""One generic runner for any recipe's pipeline: ``run_pipeline(PipelineRun(...))``.

The runner audits the dataset (``RUN/audit.json``), then executes the recipe's steps in
order, each through the core API (no command line):

* ``train`` / ``retrain``: :func:`flarecli.core.training.run.train` of the step's stage into
  ``RUN/<model>/<stage>/`` on the step's subset of its source (the audit manifest, the
  dataset folder, or a correct step's manifest), with the step's ``set`` overrides and
  ``init`` bundle;
* ``pseudolabel``: :func:`flarecli.core.inference.folder.predict` of the step's cases with the
  model ``RUN/<model>`` into ``RUN/<step>/``;
* ``correct``: the pseudo-labels of an earlier step corrected with the dataset's labels into
  ``RUN/<step>/`` and its manifest.

Every step is fingerprinted (its settings and those of the steps before it); ``RUN/
pipeline.json`` records the finished ones. Running again skips the finished steps whose
fingerprint is unchanged, resumes an interrupted training from its checkpoint (only that
very step's: a checkpoint of a run whose earlier steps differed is trained over), and redoes
everything from the first step that changed (``overwrite`` redoes all). The recipe's
inference graphs are no part of a step's fingerprint: a run that changes only them trains
nothing and rewrites each model folder's ``recipe.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from flarecli.core.errors import DataError
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import parse, to_json
from flarecli.core.training.export import write_model_recipe
from flarecli.core.training.options import Progress, TrainRun
from flarecli.core.words import count

RECORD_SCHEMA = 1


@dataclass(kw_only=True)
class RunOptions:
    """How a pipeline runs, whatever it makes: the device, the seed, worker processes, and
    ``overwrite`` (redo every step; a re-run otherwise keeps the finished ones). Shared by
    :class:`PipelineRun` and ``flare demo``'s run, keyword arguments of both."""

    device: str = "auto"
    seed: int = 0
    workers: int = 1
    overwrite: bool = False

    def run_options(self) -> dict[str, Any]:
        """These options alone, as keyword arguments (to hand on to another run)."""
        return {f.name: getattr(self, f.name) for f in fields(RunOptions)}


@dataclass
class PipelineRun(RunOptions):
    """A recipe's pipeline on a dataset folder (imagesTr/ + labelsTr/, optional imagesUn/),
    with every artefact under ``out``."""

    recipe: S.Recipe
    dataset: Path
    out: Path


@dataclass
class StepReport:
    name: str
    kind: str
    seconds: float
    skipped: bool = False
    note: str | None = None


@dataclass
class PipelineProgress:
    """Callbacks for a caller that shows progress; the core never prints."""

    step: Callable[[str, str], None] = lambda name, title: None
    done: Callable[[StepReport], None] = lambda report: None
    note: Callable[[str], None] = lambda text: None
    train: Progress | None = None  # the training steps' own progress


@dataclass
class PipelineResult:
    steps: list[StepReport] = field(default_factory=list)
    models: dict[str, Path] = field(default_factory=dict)
    final: Path | None = None
    seconds: float = 0.0


def step_recipe(recipe: S.Recipe, step: S.TrainStep) -> S.Recipe:
    """The recipe a train step trains with: its ``set`` applied to its stage."""
    if not step.set:
        return recipe
    from flarecli.core.recipes.load import set_dotted

    data = to_json(recipe.stages[step.stage])
    for key, value in step.set.items():
        set_dotted(data, key, value, where=f"pipeline.steps.{step.name}.set: ")
    stage = parse(S.Stage, data, f"pipeline.steps.{step.name}.set")
    return recipe.replace(stages={**recipe.stages, step.stage: stage})


def _title(step: S.Step) -> str:
    if isinstance(step, S.TrainStep):
        verb = "retrain" if isinstance(step, S.RetrainStep) else "train"
        return f"{verb} {step.model}/{step.stage}"
    if isinstance(step, S.PseudolabelStep):
        return f"pseudo-labels from {step.model}"
    return f"correct {step.pseudo} ({step.rule})"


class _Record:
    """``RUN/pipeline.json``: the fingerprints of the finished steps."""

    def __init__(self, path: Path, recipe: S.Recipe) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema_version": RECORD_SCHEMA, "recipe": recipe.name,
                                     "preset": recipe.preset, "steps": {}}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                if old.get("schema_version") == RECORD_SCHEMA:
                    self.data["steps"] = dict(old.get("steps", {}))
            except (OSError, ValueError, AttributeError):
                pass

    def finished(self, name: str, fingerprint: str) -> bool:
        entry = self.data["steps"].get(name, {})
        return entry.get("fingerprint") == fingerprint and entry.get("finished", False)

    def interrupted(self, name: str, fingerprint: str) -> bool:
        """Whether this very step (same fingerprint) was started and did not finish."""
        entry = self.data["steps"].get(name, {})
        return entry.get("fingerprint") == fingerprint and not entry.get("finished", True)

    def set(self, name: str, fingerprint: str, finished: bool, seconds: float = 0.0) -> None:
        from flarecli.core.io.files import write_text_atomic

        self.data["steps"][name] = {"fingerprint": fingerprint, "finished": finished,
                                    "seconds": round(seconds, 3)}
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def _fingerprint(previous: str, *parts: Any) -> str:
    h = hashlib.sha256(previous.encode())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _dataset_fingerprint(dataset: Path) -> list[Any]:
    entries = []
    for sub in ("imagesTr", "labelsTr", "imagesUn"):
        folder = dataset / sub
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file():
                    st = p.stat()
                    entries.append([sub, p.name, st.st_size, st.st_mtime_ns])
    return entries


def run_pipeline(run: PipelineRun, progress: PipelineProgress | None = None
                 ) -> PipelineResult:
    """Run every step of ``run.recipe.pipeline`` (see the module docstring)."""
    from flarecli.core.io.cases import require_dir

    progress = progress or PipelineProgress()
    require_dir(run.dataset, "dataset")
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    record = _Record(out / "pipeline.json", run.recipe)
    result = PipelineResult()
    t_start = time.perf_counter()
    chain = _fingerprint("", str(Path(run.dataset).resolve()),
                         _dataset_fingerprint(Path(run.dataset)))
    steps: list[tuple[str, str, S.Step | None]] = [("audit", "audit the dataset", None)]
    steps += [(s.name, _title(s), s) for s in run.recipe.pipeline.steps]
    redo = run.overwrite
    for name, title, step in steps:
        settings = to_json(step) if step is not None else None
        if isinstance(step, S.TrainStep):
            settings = {"step": settings, "stage": to_json(
                step_recipe(run.recipe, step).stages[step.stage])}
        chain = _fingerprint(chain, name, settings, run.seed, run.recipe.name)
        progress.step(name, title)
        t0 = time.perf_counter()
        if not redo and record.finished(name, chain):
            report = StepReport(name, _kind(step), 0.0, skipped=True)
        else:
            redo = True  # everything after a step that ran again runs again
            # a training resumes only where this very step was cut short: a checkpoint left by
            # a run whose earlier steps differed was trained on other data or another init
            interrupted = record.interrupted(name, chain)
            record.set(name, chain, finished=False)
            note = _execute(run, step, out, progress, interrupted)
            report = StepReport(name, _kind(step), time.perf_counter() - t0, note=note)
            record.set(name, chain, finished=True, seconds=report.seconds)
        if isinstance(step, S.TrainStep):
            result.models[step.model] = out / step.model
            # a step's fingerprint holds its stage, not the recipe's inference graphs: a run
            # that changes only a graph skips (or resumes) the training, and its model folder
            # must still infer with the graph asked for
            write_model_recipe(out / step.model, step_recipe(run.recipe, step))
        result.steps.append(report)
        progress.done(report)
    result.final = out / run.recipe.pipeline.final
    result.seconds = time.perf_counter() - t_start
    return result


def _kind(step: S.Step | None) -> str:
    return "audit" if step is None else step.TAG


def _execute(run: PipelineRun, step: S.Step | None, out: Path, progress: PipelineProgress,
             interrupted: bool) -> str | None:
    if step is None:
        return _audit(run, out)
    if isinstance(step, S.TrainStep):
        return _train(run, step, out, progress, interrupted)
    if isinstance(step, S.PseudolabelStep):
        return _pseudolabel(run, step, out, progress)
    return _correct(run, step, out)


def _audit(run: PipelineRun, out: Path) -> str | None:
    from flarecli.core.curation import audit
    from flarecli.core.io.files import write_text_atomic
    from flarecli.core.parallel import imap_ordered

    found = audit.dataset_cases(Path(run.dataset))
    cases = list(imap_ordered(audit.audit_case, found.cases, run.workers))
    data = audit.manifest(cases, found, {"dataset": str(Path(run.dataset).resolve())})
    write_text_atomic(out / "audit.json", json.dumps(data, indent=2) + "\n")
    s = data["summary"]
    note = (f"{count(s['cases'], 'case')}: {s['organ_full']} with all 13 organs, "
            f"{s['organ_partial']} with some, {s['organ_none']} labelled without organs, "
            f"{s['unlabeled']} unlabeled")
    if s["problems"]:
        note += f"; {s['problems']} with problems (left out)"
    return note


def _source(step: S.TrainStep, run: PipelineRun, out: Path) -> Path:
    if step.source == "audit":
        return out / "audit.json"
    if step.source == "dataset":
        return Path(run.dataset)
    return out / step.source / "manifest.json"


def _train(run: PipelineRun, step: S.TrainStep, out: Path, progress: PipelineProgress,
           interrupted: bool) -> str | None:
    from flarecli.core.training.run import train as train_stage

    recipe = step_recipe(run.recipe, step)
    run_dir = out / step.model / step.stage
    resume = (interrupted and (run_dir / "checkpoint_last.pt").is_file() and not run.overwrite
              and _same_stage(run_dir, recipe.stages[step.stage]))
    train = TrainRun(recipe, step.stage, str(_source(step, run, out)), str(out / step.model),
                     data=step.data, init=str(out / step.init) if step.init else None,
                     seed=run.seed, device=run.device, workers=run.workers,
                     cache=str(out / "cache"), overwrite=True)
    summary = train_stage(train, resume=resume, progress=progress.train)
    score = (f"best validation score {summary['best']:.3f}" if summary["validated"]
             else f"final training loss {-summary['best']:.3f}")
    left_out = (f"; {count(len(summary['problems']), 'case')} left out" if summary["problems"]
                else "")
    resumed = " (resumed)" if resume else ""
    return f"{count(summary['epochs'], 'epoch')}, {score}{left_out}{resumed}"


def _same_stage(run_dir: Path, stage: S.Stage) -> bool:
    """Whether an interrupted run folder trained exactly this stage (then it resumes)."""
    try:
        meta = json.loads((run_dir / "config.json").read_text())
        return meta.get("stage") == to_json(stage)
    except (OSError, ValueError):
        return False


def _audit_cases(out: Path) -> list[Any]:
    from flarecli.core.curation.subsets import cases_from_manifest

    cases, _, _ = cases_from_manifest(out / "audit.json")
    return cases


def _pseudolabel(run: PipelineRun, step: S.PseudolabelStep, out: Path,
                 progress: PipelineProgress) -> str | None:
    from flarecli.core.curation.subsets import select
    from flarecli.core.inference.folder import PredictRun, predict
    from flarecli.core.io.cases import Case
    from flarecli.core.recipes.load import BUILTIN_SUBSETS

    chosen = select(_audit_cases(out), step.cases, {**BUILTIN_SUBSETS, **run.recipe.subsets})
    cases = [Case(c.id, Path(c.image)) for c in chosen]
    predict_run = PredictRun("pseudolabel", out / step.model, out / step.name, device=run.device,
                             tta=step.tta, with_tumor=step.with_tumor, postprocess=step.clean,
                             overwrite=True, scores=True, graph=step.graph,
                             argv=["pipeline", step.name])
    results, _ = predict(predict_run, cases, f"pipeline step {step.name}", notes=progress.note)
    failed = [r for r in results if r.error]
    for r in failed:
        progress.note(f"error: {r.case}: {r.error}")
    return count(len(results) - len(failed), 'scan') + (f", {len(failed)} failed" if failed else "")


def _correct(run: PipelineRun, step: S.CorrectStep, out: Path) -> str | None:
    from flarecli.core.curation import correct
    from flarecli.core.curation.subsets import select
    from flarecli.core.io.files import write_text_atomic
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.recipes.load import BUILTIN_SUBSETS

    cases = _audit_cases(out)
    chosen = {c.id for c in select(cases, step.cases, {**BUILTIN_SUBSETS,
                                                       **run.recipe.subsets})}
    jobs = correct.plan_cases(cases, out / step.pseudo, out / step.name, overwrite=True,
                              rule=step.rule, selected=chosen)
    results = list(imap_ordered(correct.correct_case, jobs, run.workers))
    data = correct.manifest(results, {"pseudo": str((out / step.pseudo).resolve()),
                                      "labels": str(Path(run.dataset).resolve()),
                                      "rule": step.rule})
    write_text_atomic(out / step.name / "manifest.json", json.dumps(data, indent=2) + "\n")
    s = data["summary"]
    if not data["cases"]:
        raise DataError(f"step {step.name}: no case could be corrected "
                        f"({len(s['failed'])} failed)")
    note = f"FL {s['FL']}, CPL {s['CPL']}, PL {s['PL']}" + (
        f", kept as they are {s['partial']}" if s["partial"] else "")
    return note + (f"; {len(s['failed'])} failed: {', '.join(s['failed'][:3])}"
                   if s["failed"] else "")
