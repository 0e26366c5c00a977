"""Folder-level driver of the inference engine, shared by ``infer`` and ``pseudolabel``.

Reads the next scan in a background thread and writes finished label maps in another while
the current scan is computed; skips finished outputs unless ``overwrite``; a scan that fails
(unreadable, not 3-D, NaN) is reported in its result and the others go on.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flarecli import __version__
from flarecli.core.errors import DiskFull, FlareError, InputError, check_volume
from flarecli.core.inference.backends import BackendChoice
from flarecli.core.inference.calibration import Calibration
from flarecli.core.inference.engine import Engine
from flarecli.core.inference.profiling import ResourceSampler, recording
from flarecli.core.inference.record import (
    ScanResult,
    check_same_outputs,
    folder_scans,
    merge_scans,
    profile_summary,
)
from flarecli.core.inference.shards import distributed, gather, in_shard
from flarecli.core.io.cases import Case, absolute, discover_scans, read_scan
from flarecli.core.io.files import remove_stale_parts, write_text_atomic
from flarecli.core.io.geometry import Geometry
from flarecli.core.io.lock import output_lock
from flarecli.core.io.nifti import write_volume
from flarecli.core.io.outputs import check_ours, check_output_dir, note_written
from flarecli.core.labels import LABELS, ORGANS
from flarecli.core.preprocessing.boxes import label_counts
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import to_json
from flarecli.core.words import count


def input_cases(input_dir: Path, output_dir: Path, model_dir: Path | None = None
                ) -> tuple[list[Case], Any]:
    """The scans of a folder, and its Discovery (stray files, cases with problems); checks
    that the output folder is neither an input folder nor inside one, and writable. A folder
    with no scan at all is an InputError, naming what was ignored in it."""
    found = discover_scans(input_dir)
    cases = [c for c in found.cases if c.image is not None or c.problems]
    if not cases:
        seen = [f"{Path(p).relative_to(input_dir) if Path(p).is_relative_to(input_dir) else p}"
                f": {why.removesuffix(', ignored')}" for p, why in found.stray]
        raise InputError(f"{input_dir}: no scans found, neither NIfTI images (<case>_0000.nii.gz"
                         ") nor DICOM CT series", hint=("ignored " + "; ".join(seen[:3])
                                                        + ("; ..." if len(seen) > 3 else ""))
                         if seen else None)
    check_output_dir(output_dir, "output folder",
                     case_dirs=[input_dir] + ([model_dir] if model_dir else []))
    return cases, found


def read_case(case: Case) -> tuple[np.ndarray | None, Geometry | None, float, str | None]:
    """(image, geometry, seconds, None) or (None, None, seconds, the problem)."""
    t0 = time.perf_counter()
    try:
        image, geometry = read_scan(case.image, case.series_uid)
        if min(image.shape) < 2:
            raise InputError(f"{case.image.name}: image has a single slice/row ({image.shape}"
                             "), expected a 3-D scan")
        return image, geometry, time.perf_counter() - t0, None
    except FlareError as e:
        return None, None, time.perf_counter() - t0, str(e)


def output_path(output_dir: Path, case: Case, output_format: str) -> Path:
    return Path(output_dir) / f"{case.id}{'.dcm' if output_format == 'dicom-seg' else '.nii.gz'}"


@dataclass(frozen=True)
class Planned:
    """What a run does with a case: ``compute`` it, ``skip`` it (a finished output that reads
    back whole is kept), or report its ``error``. ``redo``: why an output on disk was not
    trusted (cut short by a full disk, say), so the case is computed again."""

    case: Case
    target: Path
    action: str  # 'compute', 'skip' or 'error'
    redo: str | None = None


#: Why a kept pseudo-label is computed again: its score was never recorded (a killed run).
UNSCORED = "its quality score is not in the folder's run record (a run stopped before writing it)"


def _recheck_kept(plan: list[Planned], recorded: dict[str, dict[str, Any]], scores: bool,
                  min_score: float | None) -> list[Planned]:
    """A kept output is computed again when the folder's run record (``recorded``) names
    another scan than the case's now (a folder of other scans under the same names: a grid
    and a date can agree by chance, the recorded source cannot), and a kept pseudo-label
    when its quality score was never recorded (``scores``) or is under ``min_score``."""
    out = []
    for p in plan:
        why = _why_redo(recorded.get(p.case.id, {}), p.case, scores, min_score) \
            if p.action == "skip" else None
        out.append(Planned(p.case, p.target, "compute", why) if why else p)
    return out


def _why_redo(entry: dict[str, Any], case: Case, scores: bool, min_score: float | None
              ) -> str | None:
    source = entry.get("image")
    if isinstance(source, str) and case.image is not None \
            and Path(source).resolve() != Path(case.image).resolve():
        return f"it was made from {source}"
    score = entry.get("score")
    if not isinstance(score, (int, float)):
        score = None
    if scores and score is None:
        return UNSCORED
    if min_score is not None and score is not None and score < min_score:
        return f"its recorded quality score {score:.4f} is under --min-score"
    return None


def _other_grid(target: Path, case: Case) -> str | None:
    """Why a NIfTI output is not on its NIfTI scan's grid (another tool's file, another
    scan's), or None. A DICOM series' grid is not read here: that takes the whole series."""
    from flarecli.core.io.nifti import read_header
    from flarecli.core.io.nifti_header import nifti_suffix

    if case.image is None or nifti_suffix(target) is None or nifti_suffix(case.image) is None:
        return None
    try:
        scan = read_header(case.image)
    except FlareError:
        return None  # the scan's own problem is reported when it is read
    try:
        mismatch = scan.mismatches(read_header(target))
    except FlareError as e:
        return f"it cannot be read ({e})"
    return f"it is not on its scan's grid ({'; '.join(mismatch)})" if mismatch else None


def plan_outputs(cases: list[Case], output_dir: Path, output_format: str, overwrite: bool
                 ) -> list[Planned]:
    """Each case's action. An existing output is kept only when it reads back whole
    (:func:`~flarecli.core.io.files.damaged`): a file cut short, copied from a full disk or
    half-written by another tool, is computed again, never trusted for being there; so is
    one older than its scan (the scan was replaced after it was segmented)."""
    from flarecli.core.io.files import SOURCE_CHANGED, damaged, newer_source

    plan = []
    for c in cases:
        target = output_path(output_dir, c, output_format)
        if c.problems:  # e.g. two files for one case: which one was meant is not ours to pick
            plan.append(Planned(c, target, "error"))
        elif overwrite or not target.exists():
            plan.append(Planned(c, target, "compute"))
        else:
            why = (damaged(target) or (SOURCE_CHANGED if newer_source(target, c.image) else None)
                   or _other_grid(target, c))
            plan.append(Planned(c, target, "skip" if why is None else "compute", why))
    return plan


def run_folder(engine: Engine, plan: list[Planned], output_dir: Path, *, tta: bool = False,
               postprocess: S.Postprocess | None = None, scores: bool = False,
               min_score: float | None = None, output_format: str = "nifti",
               read_ahead: dict[str, Future] | None = None, command: str = "infer",
               share: str | None = None) -> Iterator[ScanResult]:
    """Predict the planned cases (:func:`plan_outputs`) into ``output_dir/<case>.nii.gz``;
    yields one result per case.

    ``postprocess``: a recipe Postprocess (None: none). ``scores``: compute each case's
    quality score (confidence x TTA agreement; pseudo-labels). With ``min_score`` a case whose
    quality score falls short is not written -- and an earlier output of it is removed, so
    that nothing downstream takes a stale pseudo-label for a rejected one. ``read_ahead``:
    reads already started (case id -> future of ``read_case``), e.g. while the model loaded.
    ``command`` and ``share``: whose outputs the folder's ledger lists them as
    (:func:`~flarecli.core.io.outputs.note_written`).

    A write that fails is that case's error; a full disk stops the run (DiskFull, naming
    the case whose output it cut short) after the cases already written are yielded.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(output_dir)
    read_ahead = dict(read_ahead or {})

    def result_of(c: Case, target: Path, **kw) -> ScanResult:
        image = absolute(c.image) if c.image is not None else ""
        return ScanResult(c.id, image, str(target), series_uid=c.series_uid, **kw)

    todo = [(p.case, p.target) for p in plan if p.action == "compute"]
    for p in plan:
        if p.action == "error":
            yield result_of(p.case, p.target, error="; ".join(p.case.problems))
        elif p.action == "skip":
            yield result_of(p.case, p.target, skipped=True)

    def read(case: Case):
        started = read_ahead.pop(case.id, None)
        return started.result() if started is not None else read_case(case)

    def write(target: Path, label: np.ndarray, geometry, case: Case) -> float:
        t0 = time.perf_counter()
        note_written(target, command, share)
        if output_format == "dicom-seg":
            from flarecli.core.io.dicom import write_seg

            write_seg(target, label, case.image, case.series_uid)  # type: ignore[arg-type]
        else:
            write_volume(target, label, geometry)
        return time.perf_counter() - t0

    def finish(pending: tuple[Future, ScanResult], position: int) -> ScanResult:
        future, result = pending
        try:
            result.seconds["write"] = future.result()
        except DiskFull as e:  # every later write would fail too: the run stops, naming them
            left = [c.id for c, _ in todo[position + 1:]]
            if left:
                e.message += (f"; not written: {len(left)} more case"
                              f"{'s' if len(left) > 1 else ''} ({', '.join(left[:5])}"
                              f"{', ...' if len(left) > 5 else ''})")
            raise
        except FlareError as e:
            result.error = str(e)
        except OSError as e:  # outside the atomic write (e.g. reading a DICOM source again)
            result.error = f"{result.output}: cannot be written ({e.strerror or e})"
        result.seconds["total"] = sum(result.seconds.get(k, 0.0)
                                      for k in ("read", "compute", "write"))
        return result

    # the next scan is read and the previous one written while the current one is computed
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        pending: tuple[Future, ScanResult] | None = None
        at = -1  # the position in ``todo`` of the pending write
        next_read = reader.submit(read, todo[0][0]) if todo else None
        for i, (case, target) in enumerate(todo):
            image, geometry, t_read, error = next_read.result()  # type: ignore[union-attr]
            next_read = reader.submit(read, todo[i + 1][0]) if i + 1 < len(todo) else None
            result = result_of(case, target)
            result.seconds["read"] = t_read
            if error:
                result.error = error
                yield result
                continue
            result.geometry_note = geometry.note
            label = _compute(engine, image, geometry, result, tta=tta,
                             stats=scores or min_score is not None, postprocess=postprocess)
            del image
            if min_score is not None and (result.score or 0.0) < min_score:
                result.rejected = True
                target.unlink(missing_ok=True)
                yield result
                continue
            if pending is not None:
                yield finish(pending, at)
            pending, at = (writer.submit(write, target, label, geometry, case), result), i
        if pending is not None:
            yield finish(pending, at)


def _compute(engine: Engine, image: np.ndarray, geometry: Geometry, result: ScanResult, *,
             tta: bool, stats: bool, postprocess: S.Postprocess | None) -> np.ndarray:
    """The labels of one scan; its timings, resources, scores and organ volumes go into
    ``result``."""
    cuda = engine.device.type == "cuda"
    if cuda:  # torch is imported only where it runs
        import torch
    t0 = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats(str(engine.device))
    with recording() as steps, ResourceSampler(engine.device) as sampler:
        pred = engine.predict(image, geometry, tta=tta, stats=stats, postprocess=postprocess)
        if cuda:
            torch.cuda.synchronize(str(engine.device))
    result.seconds.update({k: round(v, 4) for k, v in pred.seconds.items()})
    result.seconds["compute"] = time.perf_counter() - t0
    result.steps = {k: round(v, 4) for k, v in steps.items()}
    result.peak_rss_mb = sampler.peak_rss_mb
    result.cpu_area_pct_s = round(sampler.cpu_area_pct_s, 1)
    result.cpu_utilisation_pct = sampler.cpu_utilisation_pct
    result.confidence, result.agreement = pred.confidence, pred.agreement
    counts = label_counts(pred.label, minlength=15)
    result.volumes_ml = {c: round(float(counts[c]) * geometry.voxel_volume_mm3 / 1000, 3)
                         for c in ORGANS}
    if cuda:
        result.gpu_peak_mb = torch.cuda.max_memory_allocated(str(engine.device)) / 2**20
        result.gpu_max_used_mb = sampler.gpu_max_mb
        result.gpu_area_mb_s = sampler.gpu_area_mb_s
    return pred.label


# ---------------------------------------------------------------------------------------------
# a whole prediction run: engine, loop, run record
# ---------------------------------------------------------------------------------------------

@dataclass
class PredictRun:
    """Options of an ``infer`` or ``pseudolabel`` run. ``postprocess`` None takes the
    model's recipe; ``min_tumor_mm3`` / ``connectivity`` override its post-processing."""

    command: str
    model: Path
    output_dir: Path
    device: str = "auto"
    weights: str | None = None
    tta: bool = False
    with_tumor: bool = True
    postprocess: bool | None = None
    min_tumor_mm3: float | None = None
    connectivity: int | None = None
    overwrite: bool = False
    scores: bool = False
    min_score: float | None = None
    graph: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = None
    calibration: Path | None = None  # scans that calibrate --precision int8
    shard: tuple[int, int] | None = None  # (i, n): the i-th of n disjoint shares, 1-based
    output_format: str = "nifti"  # or 'dicom-seg' (DICOM inputs)
    argv: list[str] = field(default_factory=list)

    @property
    def record_name(self) -> str:
        """The run record: ``infer.json``, or ``infer.shard-I-of-N.json`` for a shard (shards
        run at once never write one shared file)."""
        if self.shard is None:
            return f"{self.command}.json"
        return f"{self.command}.shard-{self.shard[0]}-of-{self.shard[1]}.json"


def resolved_postprocess(engine: Engine, switch: bool | None,
                         min_tumor_mm3: float | None = None, connectivity: int | None = None
                         ) -> S.Postprocess | None:
    """The post-processing a run applies: the recipe's, switched (``switch`` None: as the
    recipe says) and adjusted by options."""
    base = engine.graph.postprocess
    if switch is False or (switch is None and base is None):
        return None
    spec = base or S.Postprocess()
    changes = {k: v for k, v in (("min_tumor_mm3", min_tumor_mm3),
                                 ("connectivity", connectivity)) if v is not None}
    return replace(spec, **changes)


def load_engine(model_dir: Path, device, choice: BackendChoice, *, with_tumor: bool = True,
                which: str | None = None, graph: str | None = None,
                warn: Callable[[str], None] | None = None, probabilities: bool = False,
                progress: Callable[[str], None] | None = None) -> Engine:
    """The engine of a run's options (``choice``: checked already). With ``--precision
    int8`` it gets the run's :class:`~flarecli.core.inference.calibration.Calibration`, which
    captures its inputs with the same model at the default precision, on first need."""
    calibration = None
    if choice.precision == "int8":
        assert choice.calibration is not None  # BackendChoice.check refuses int8 without
        calibration = Calibration(choice.calibration, model_dir, choice.cache_dir,
                                  with_tumor=with_tumor, which=which, graph=graph)
    return Engine(model_dir, device, with_tumor=with_tumor, which=which, graph=graph,
                  backend=choice, warn=warn, probabilities=probabilities,
                  calibration=calibration, progress=progress)


def check_seg_sources(cases: list[Case], output_dir: Path, overwrite: bool,
                      notes: Any = None) -> dict[str, dict[str, Any]]:
    """Before any work, the DICOM series a run will write a SEG of: a series no SEG can
    reference becomes its case's problem (one line, exit code 4; the others are written),
    and what the SEG fills in (anonymised series) is noted. Returns case id -> filled in.
    Series with an output on disk are left to the run (kept, or redone by write_seg)."""
    from flarecli.core.errors import DataError
    from flarecli.core.io.dicom import seg_fill_ins

    filled: dict[str, dict[str, Any]] = {}
    for c in cases:
        if c.series_uid is None or c.problems or (
                not overwrite and output_path(output_dir, c, "dicom-seg").exists()):
            continue
        try:
            found = seg_fill_ins(c.image, c.series_uid)  # type: ignore[arg-type]
        except DataError as e:
            c.problems.append(f"no DICOM SEG can be written: {e}")
            continue
        if found:
            filled[c.id] = found
            if notes is not None:
                by_how: dict[str, list[str]] = {}
                for attr, what in found.items():
                    by_how.setdefault(what["how"], []).append(attr)
                notes(f"note: {c.id}: the series lacks " + "; ".join(
                    f"{', '.join(attrs)} ({how})" for how, attrs in by_how.items())
                    + ": the DICOM SEG has them, the input files are unchanged (infer.json: "
                    "dicom_filled)")
    return filled


def _share(cases: list[Case], run: PredictRun, ranks: tuple[int, int, int] | None
           ) -> tuple[list[Case], PredictRun]:
    """The cases of this process (of its shard, and under torchrun of its rank), and its run
    (under torchrun on its own GPU)."""
    if ranks is None:
        return [c for c in cases if in_shard(c.id, run.shard)], run
    rank, world, local = ranks
    cases = [c for c in cases if in_shard(c.id, run.shard) and in_shard(c.id, (rank + 1, world))]
    if run.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            run = replace(run, device=f"cuda:{local % torch.cuda.device_count()}")
    return cases, run


def predict(run: PredictRun, cases: list[Case], source: str,
            notes: Callable[[str], None] | None = None,
            on_result: Callable[[ScanResult], None] | None = None,
            on_step: Callable[[str], None] | None = None
            ) -> tuple[list[ScanResult], dict[str, Any]]:
    """Load the model, predict every case, write ``OUTPUT/<command>.json``. Returns (results,
    run record). ``notes(text)`` receives remarks for the user, ``on_result(result)`` each
    result as it comes, ``on_step(text)`` what the run is doing: loading the model (notes
    say when it is compiled for this CPU, 30-50 s once), then the command's name."""
    from flarecli.core.preprocessing.connected import structure

    if run.connectivity is not None:
        structure(run.connectivity)
    if run.min_tumor_mm3 is not None:
        check_volume("--min-tumor-mm3", run.min_tumor_mm3)
    if run.min_score is not None and not 0 <= run.min_score <= 1:
        raise InputError(f"--min-score {run.min_score}: must be within 0..1")
    if run.output_format not in ("nifti", "dicom-seg"):
        raise InputError(f"--output-format {run.output_format}: expected nifti or dicom-seg")
    if run.output_format == "dicom-seg":
        from flarecli.core.io.dicom import check_seg_available

        check_seg_available()
        if any(c.image is not None and c.series_uid is None for c in cases):
            raise InputError("--output-format dicom-seg needs DICOM input series (a DICOM SEG "
                             "references its source images)")
    ranks = distributed()
    cases, run = _share(cases, run, ranks)  # torchrun: each rank its share (of this shard)
    share = "-".join(([f"shard-{run.shard[0]}-of-{run.shard[1]}"] if run.shard else [])
                     + ([f"rank-{ranks[0]}-of-{ranks[1]}"] if ranks else [])) or None
    with output_lock(run.output_dir, share, notes):  # one run at a time into a folder
        return _predict(run, cases, source, ranks, notes, on_result, on_step, share)


def _recorded_outputs(recorded: dict[str, dict[str, Any]]) -> list[str]:
    """The names of the outputs a folder's run records say were written (the outputs of a
    folder from before its ledger): not a case that failed, was rejected or was skipped --
    a skipped one may be a file an older flare adopted."""
    return [Path(e["output"]).name for e in recorded.values()
            if isinstance(e.get("output"), str) and not e.get("error")
            and not e.get("rejected") and not e.get("skipped")]


def _predict(run: PredictRun, cases: list[Case], source: str,
             ranks: tuple[int, int, int] | None, notes: Callable[[str], None] | None,
             on_result: Callable[[ScanResult], None] | None,
             on_step: Callable[[str], None] | None = None, share: str | None = None
             ) -> tuple[list[ScanResult], dict[str, Any]]:
    """:func:`predict` once the output folder is this run's."""
    from flarecli.core.io.archive import opened_model
    from flarecli.core.runtime import inference_device

    recorded = folder_scans(Path(run.output_dir), run.command)
    check_ours(Path(run.output_dir), run.command,
               [output_path(run.output_dir, c, run.output_format) for c in cases
                if not c.problems], _recorded_outputs(recorded))
    filled = (check_seg_sources(cases, run.output_dir, run.overwrite, notes)
              if run.output_format == "dicom-seg" else {})
    # the first scan to compute is read while torch is imported and the model loads (a
    # one-scan run, how the FLARE laptop tasks time a scan, would otherwise do them in turn)
    plan = plan_outputs(cases, run.output_dir, run.output_format, run.overwrite)
    plan = _recheck_kept(plan, recorded, run.scores, run.min_score)
    if notes is not None:
        for p in plan:
            if p.redo is not None:
                notes(f"note: {p.target}: {p.redo}; computed again")
    first = next((p.case for p in plan if p.action == "compute"), None)
    early = ThreadPoolExecutor(1)
    read_ahead = {first.id: early.submit(read_case, first)} if first is not None else {}
    early.shutdown(wait=False)
    dev = inference_device(run.device)
    choice = BackendChoice(run.backend, run.precision, run.cache_dir, run.calibration)
    choice.check(dev)
    t0 = time.perf_counter()
    if on_step is not None:
        on_step("loading the model")
    with opened_model(run.model) as model_dir:  # a folder, or a zip unpacked for loading
        engine = load_engine(model_dir, dev, choice, with_tumor=run.with_tumor,
                             which=run.weights, graph=run.graph, warn=notes,
                             probabilities=run.tta or run.scores or run.min_score is not None,
                             progress=notes)
    t_load = time.perf_counter() - t0
    post = resolved_postprocess(engine, run.postprocess, run.min_tumor_mm3, run.connectivity)
    record_path = Path(run.output_dir) / run.record_name
    if not run.overwrite:
        check_same_outputs(record_path, _made_with(run, engine, post))
    views = engine.views(run.tta)
    if notes is not None:
        notes(f"{count(len(cases), 'scan')}, model '{engine.graph_name}' of recipe "
              f"'{engine.recipe.name}' loaded on {dev} in {t_load:.1f} s")
        for name, n in views.items():
            if run.tta and n == 1:
                notes(f"note: {run.model}/{name} was trained without mirroring, so TTA has "
                      "no views to add for it: a flipped scan is anatomy it never saw")
    if on_step is not None:
        on_step(run.command)
    results: list[ScanResult] = []
    try:
        for r in run_folder(engine, plan, run.output_dir, tta=run.tta, postprocess=post,
                            scores=run.scores, min_score=run.min_score,
                            output_format=run.output_format, read_ahead=read_ahead,
                            command=run.command, share=share):
            if r.case in filled and not r.skipped:
                r.dicom_filled = filled[r.case]
            results.append(r)
            if on_result is not None:
                on_result(r)
    except KeyboardInterrupt:
        # the scans finished so far keep their entries (quality scores, volumes), which a
        # resumed run takes for the outputs it keeps
        if ranks is None and results:
            _write_record(record_path, _run_record(run, engine, source, str(dev), post,
                                                   t_load, results), results)
        raise
    record = _run_record(run, engine, source, str(dev), post, t_load, results)
    if ranks is not None:  # rank 0 writes the run record of all ranks
        everything = gather(results)
        if everything is None:
            record["writer"] = False  # the command writes no shared report either
            return results, record
        record.update(profile_summary(everything))
        record["world_size"] = ranks[1]
        results_for_record = everything
    else:
        results_for_record = results
    _write_record(record_path, record, results_for_record)
    return results, record


def _write_record(path: Path, record: dict[str, Any], results: list[ScanResult]) -> None:
    """Write a run record, its scans those of ``results`` and of earlier runs' other cases."""
    record["scans"] = merge_scans(path, results)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _made_with(run: PredictRun, engine: Engine, post: S.Postprocess | None
               ) -> dict[str, Any]:
    """What the run record says made its outputs -- the model (each stage's weights'
    SHA-256) and the settings that change a label -- and a later run into the folder must
    match (:func:`flarecli.core.inference.record.check_same_outputs`)."""
    return {
        "graph": engine.graph_name, "model_sha256": engine.checksums(), "tta": run.tta,
        "with_tumor": engine.labels_tumor,
        "postprocess": to_json(post) if post is not None else None,
    }


def _run_record(run: PredictRun, engine: Engine, source: str, device: str,
                post: S.Postprocess | None, t_load: float, results: list[ScanResult]
                ) -> dict[str, Any]:
    """The run record of this process's results (the scans of earlier runs not merged yet)."""
    return {
        "command": run.command, "shard": list(run.shard) if run.shard else None,
        "flare_version": __version__, "argv": run.argv or sys.argv[1:],
        "input": source, "model": str(Path(run.model).resolve()),
        "recipe": engine.recipe.name, "preset": engine.recipe.preset,
        "stages": {name: {"sha256": s.sha256, "weights": s.which}
                   for name, s in engine.stages.items()},
        **_made_with(run, engine, post), "device": device,
        "backends": engine.backends(), "tta_views": engine.views(run.tta),
        "model_load_seconds": round(t_load, 3),
        "label_names": {str(k): v for k, v in LABELS.items()},
        **profile_summary(results),
    }
