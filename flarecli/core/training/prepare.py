"""Preparing a run's data before the first step: the source read, the phases planned, the
intensity numbers resolved, the cache filled; cases that cannot be read are left out while
enough remain."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flarecli.core.curation.subsets import SourceCase, read_source
from flarecli.core.errors import DataError, FlareError
from flarecli.core.io.files import remove_stale_parts
from flarecli.core.io.nifti import read_label_map, read_volume
from flarecli.core.io.outputs import check_output_dir
from flarecli.core.preprocessing import intensity as I
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import RecipeError
from flarecli.core.training.cache import CacheJob, build_cache_entry, cache_key
from flarecli.core.training.context import Context
from flarecli.core.training.network import seen_by_init
from flarecli.core.training.options import Progress, TrainRun
from flarecli.core.training.phases import Phase, plan_phases, without_cases
from flarecli.core.words import count

#: A run goes on without the cases it cannot read when at least this share of the cases it
#: would use remains (and every phase keeps a training case); otherwise it stops before
#: training, since the source is more likely wrong than a few of its cases.
MIN_USABLE_FRACTION = 0.5


@dataclass
class Prepared:
    """The run's data: cases by id, phases, intensity numbers, cached arrays, notes, the
    cases left out because they could not be read (case id, problem), and the problems of
    the source's own files (file, problem: a malformed dataset.json), which leave no case
    out."""

    cases: dict[str, SourceCase]
    phases: list[Phase]
    intensity: I.Intensity
    paths: dict[str, Path]
    notes: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)
    file_problems: list[tuple[str, str]] = field(default_factory=list)


def check_enough(n_bad: int, n_cases: int, phases: list[Phase] = ()) -> None:
    """Raise DataError unless enough cases remain (MIN_USABLE_FRACTION of ``n_cases``, and
    a training case in every phase)."""
    if n_cases - n_bad < MIN_USABLE_FRACTION * n_cases or any(not p.cases for p in phases):
        raise DataError(f"{n_bad} of {count(n_cases, 'case')} cannot be used (see the lines "
                        "above): "
                        "too few left to train on", hint="fix the cases, or give a source "
                        "without them (a manifest lists which to use)")


def case_folders(cases: list[SourceCase]) -> list[Path]:
    """The folders holding a source's images and labels (outputs must not land there)."""
    return sorted({Path(f).parent for c in cases for f in (c.image, c.label) if f})


def compute_intensity(cases: list[SourceCase], stage: S.Stage, seed: int) -> I.Intensity:
    """The stage's intensity numbers; the foreground scheme samples the labelled voxels of
    the cases that read (an unreadable one is reported when it is cached)."""
    if stage.intensity.scheme != "foreground":
        return I.resolve(stage.intensity)
    rng = np.random.default_rng(seed)
    samples = []
    for c in cases:
        try:
            image, _ = read_volume(Path(c.image))
            label, _ = read_label_map(Path(c.label))  # type: ignore[arg-type]
        except FlareError:
            continue
        if image.shape == label.shape:
            samples.append(I.foreground_samples(image, label, rng))
    return I.resolve(stage.intensity, np.concatenate(samples) if samples else None)


def _listed(ids: list[str]) -> str:
    return f"{', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}"


def check_same_cases(phases: list, meta: dict, source: str) -> None:
    """A resumed run trains on the cases its config.json records, or not at all: a case added
    to (or lost from) the source since would join the rest of the run, or a validation split
    be drawn again, and the weights differ from an uninterrupted run's."""
    from flarecli.core.errors import InputError

    recorded = {p.get("name"): (sorted(p.get("cases", [])), sorted(p.get("val_cases", [])))
                for p in meta.get("phases", []) if isinstance(p, dict)}
    for p in phases:
        then = recorded.get(p.name)
        if then is None or then == (sorted(p.cases), sorted(p.val_cases)):
            continue
        new = sorted((set(p.cases) | set(p.val_cases)) - set(then[0] + then[1]))
        gone = sorted(set(then[0] + then[1]) - set(p.cases) - set(p.val_cases))
        what = [f"{len(new)} not in the run ({_listed(new)})"] if new else []
        what += [f"{len(gone)} missing ({_listed(gone)})"] if gone else []
        raise InputError(f"{source}: no longer gives the cases this run trained on (phase "
                         f"'{p.name}': {'; '.join(what) or 'another validation split'})",
                         hint="resume from the source as it was, or start again with "
                         "--overwrite")


def prepare_data(run: TrainRun, stage: S.Stage, meta: dict | None, ctx: Context,
                 progress: Progress) -> Prepared:
    """Read the source, plan the phases, resolve the intensity, fill the cache."""
    from flarecli.core.parallel import imap_ordered

    workers = run.workers if run.workers is not None else 1
    source_cases, notes, problems, file_problems = read_source(Path(run.source),
                                                               max(1, workers))
    for case, message in problems + file_problems:
        progress.problem(case, message)
    by_id = {c.id: c for c in source_cases}
    labelled = [c for c in source_cases if c.label is not None]
    phases = plan_phases(labelled, stage, run.data if run.data is not None else stage.data,
                         run.recipe, run.seed)
    check_enough(len(problems), len(labelled) + len(problems))
    if meta is not None:
        check_same_cases(phases, meta, run.source)
    cache_dir = Path(run.cache) if run.cache else Path(run.out) / "cache"
    if ctx.lead:
        folders = case_folders(source_cases)
        if Path(run.source).is_dir():
            folders.append(Path(run.source))
        check_output_dir(Path(run.out), "--out", case_dirs=folders)
        check_output_dir(cache_dir, "--cache", case_dirs=folders)
    for p in phases:
        kinds = [by_id[i].kind for i in p.cases]
        if isinstance(stage.method, S.SelfTraining):
            unweighted = sorted(set(kinds) - set(stage.method.weights))
            if unweighted:
                kind = unweighted[0]
                raise RecipeError(f"stages.{run.stage}.method.weights",
                                  f"{kinds.count(kind)} training cases are of kind '{kind}', "
                                  "which has no self-training weight",
                                  hint="train on another --data subset (e.g. FL), or give "
                                  f"kind '{kind}' a weight")
        counts = ", ".join(f"{k} {kinds.count(k)}" for k in dict.fromkeys(kinds))
        progress.stage(f"{p.name}: {len(p.cases)} training ({counts}) / {len(p.val_cases)} "
                       "validation cases")
    if run.init:
        seen = seen_by_init(Path(run.init), phases[0].val_cases, stage)
        notes += [seen] if seen else []
    for note in notes:
        progress.stage(f"note: {note}")
    used = sorted({i for p in phases for i in (*p.cases, *p.val_cases)})
    if meta is not None:
        intensity = I.Intensity.from_json(meta["intensity"])
    else:
        progress.stage("intensity statistics")
        intensity = compute_intensity([by_id[i] for i in used], stage, run.seed)
    def job(case_id: str) -> CacheJob:
        case = by_id[case_id]
        key = cache_key(stage, intensity, Path(case.image), Path(case.label))
        return CacheJob(case_id, case.image, str(case.label),
                        str(cache_dir / f"{case_id}-{key}.npz"), stage, intensity)

    jobs = [job(i) for i in used]
    failed: list[tuple[str, str]] = []
    if ctx.lead:
        remove_stale_parts(cache_dir)
        for n, (job, err) in enumerate(zip(jobs, imap_ordered(build_cache_entry, jobs, workers),
                                           strict=True)):
            progress.cache(n + 1, len(jobs))
            if err:
                failed.append((job.case_id, err))
                progress.problem(job.case_id, err)
        if failed:
            phases = without_cases(phases, {c for c, _ in failed})
            check_enough(len(failed), len(used), phases)
    ctx.barrier()
    return Prepared(by_id, phases, intensity, {j.case_id: Path(j.path) for j in jobs}, notes,
                    problems + failed, file_problems)
