"""What ``infer`` and ``pseudolabel`` share: loading the engine, the loop, the run record."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from flarecli.commands._ui import err, problem, track


def predict_folder(command: str, input_dir: Path, output_dir: Path, model_dir: Path, *,
                   device: str, weights: str | None, tta: bool, with_tumor: bool, clean: bool,
                   overwrite: bool, min_score: float | None, connectivity: int,
                   min_tumor_mm3: float) -> tuple[list[Any], dict[str, Any]]:
    """Run the engine over a folder; print problems; write ``OUTPUT/<command>.json``.

    Returns (results, run record). Raises CasesFailed after the loop if any scan failed.
    """
    from flarecli import __version__
    from flarecli.core.inference.engine import Engine
    from flarecli.core.inference.folder import input_cases, profile_summary, run_folder
    from flarecli.core.io.cases import require_dir
    from flarecli.core.io.nifti import write_text_atomic
    from flarecli.core.labels import LABELS
    from flarecli.core.postprocessing.components import structure
    from flarecli.core.runtime import resolve_device, setup_torch

    require_dir(input_dir, "input")
    structure(connectivity)
    cases, stray = input_cases(input_dir, output_dir)
    dev = resolve_device(device)
    setup_torch(dev)
    t0 = time.perf_counter()
    engine = Engine(model_dir, dev, with_tumor=with_tumor, which=weights)
    t_load = time.perf_counter() - t0
    err.print(f"{len(cases)} scans, models loaded on {dev} in {t_load:.1f} s", highlight=False)
    views = {name: len(stage.flips) if tta else 1
             for name, stage in (("organs", engine.organs), ("tumor", engine.tumor))
             if stage is not None}
    for name, n in views.items():
        if tta and n == 1:
            err.print(f"[yellow]note[/yellow]: {model_dir}/{name} was trained without "
                      "mirroring, so --tta has no views to add for it: a flipped scan is "
                      "anatomy it never saw", highlight=False)
    for path, message in stray:
        problem(str(path), message)
    results = []
    for r in track(run_folder(engine, cases, output_dir, tta=tta, with_tumor=with_tumor,
                              clean=clean, overwrite=overwrite, min_score=min_score,
                              connectivity=connectivity, min_tumor_mm3=min_tumor_mm3),
                   len(cases), command):
        if r.error:
            problem(r.case, r.error)
        results.append(r)
    record_path = Path(output_dir) / f"{command}.json"
    merged = merge_scans(record_path, results)
    record = {
        "command": command, "flare_version": __version__, "argv": sys.argv[1:],
        "input": str(Path(input_dir).resolve()), "model": str(Path(model_dir).resolve()),
        "model_sha256": engine.checksums(), "device": str(dev), "tta": tta,
        "tta_views": views,
        "with_tumor": with_tumor and engine.tumor is not None, "postprocess": clean,
        "model_load_seconds": round(t_load, 3),
        "label_names": {str(k): v for k, v in LABELS.items()},
        **profile_summary(results),
    }
    record["scans"] = merged
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return results, record


def merge_scans(record_path: Path, results: list[Any]) -> list[dict[str, Any]]:
    """This run's scans plus the earlier runs' entries for the other (or skipped) cases, so
    several runs into one folder (e.g. imagesTr then imagesUn) keep one complete record."""
    earlier: dict[str, dict[str, Any]] = {}
    if record_path.is_file():
        try:
            earlier = {s["case"]: s for s in json.loads(record_path.read_text())["scans"]}
        except (OSError, ValueError, KeyError, TypeError):
            earlier = {}
    for r in results:
        if not (r.skipped and r.case in earlier):
            earlier[r.case] = r.to_json()
    return [earlier[k] for k in sorted(earlier)]


def finish(results: list[Any], what: str = "scans") -> None:
    from flarecli.core.errors import CasesFailed

    failed = sum(1 for r in results if r.error)
    if failed:
        raise CasesFailed(failed, len(results), what)
