"""``flare infer``: segment a folder of CT scans with a model folder's inference graph."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._predict import finish, predict_folder
from flarecli.commands._ui import (
    BACKEND,
    CACHE_DIR,
    CALIBRATION,
    DEVICE,
    OVERWRITE,
    PRECISION,
    SCANS,
    SHARD,
    TTA,
    out,
)
from flarecli.core.words import count


def infer(
    input_dir: Path = SCANS,
    output_dir: Path = typer.Argument(..., help="Folder for the label maps (<case>.nii.gz, "
                                      "or <case>.dcm with --output-format dicom-seg)."),
    model: Path = typer.Option(..., "--model", help="Model folder or .zip (flare export): "
                               "one bundle per stage and its recipe.json."),
    graph: str | None = typer.Option(None, "--graph", help="Which model of the folder's "
                                     "recipe to run (default: the first it holds "
                                     "completely)."),
    device: str = DEVICE,
    backend: str = BACKEND,
    precision: str = PRECISION,
    calibration: Path | None = CALIBRATION,
    cache_dir: Path | None = CACHE_DIR,
    weights: str | None = typer.Option(None, "--weights", help="best or final (default: each "
                                       "bundle's own choice)."),
    tta: bool = TTA,
    postprocess: bool | None = typer.Option(None, "--postprocess/--no-postprocess",
                                            help="Connected-component clean-up (default: "
                                            "as the recipe says)."),
    connectivity: int | None = typer.Option(None, "--connectivity", help="6, 18 or 26 "
                                            "(default: the recipe's)."),
    min_tumor_mm3: float | None = typer.Option(None, "--min-tumor-mm3", help="Drop tumor "
                                               "components below this (default: the "
                                               "recipe's, 100)."),
    overwrite: bool = OVERWRITE,
    profile: Path | None = typer.Option(None, "--profile", dir_okay=False,
                                        help="Write per-scan profile here: seconds of "
                                        "every step, peak RSS, CPU and GPU use."),
    stats: Path | None = typer.Option(None, "--stats", dir_okay=False, help="Also write "
                                      "the outputs' statistics here (JSON, as flare stats "
                                      "--images)."),
    preview: Path | None = typer.Option(None, "--preview", file_okay=False, help="Also draw "
                                        "a PNG per scan into this folder (as flare preview)."),
    output_format: str = typer.Option("nifti", "--output-format", help="nifti (<case>.nii.gz)"
                                      " or dicom-seg (<case>.dcm, for DICOM input series)."),
    shard: str | None = SHARD,
) -> None:
    """Segment 13 organs and tumors with a model folder: e.g. StMt's coarse abdomen -> fine
    ROI -> tumor overlaid on organs.

    Outputs are uint8 with exactly each input's grid. Existing outputs are skipped (resume).
    Exit code 4 if some scans failed (the others are written).
    """
    from flarecli.commands._ui import write_json
    from flarecli.core.inference.folder import PredictRun
    from flarecli.core.inference.shards import parse_shard

    run = PredictRun("infer", model, output_dir, device=device, weights=weights, tta=tta,
                     postprocess=postprocess, connectivity=connectivity,
                     min_tumor_mm3=min_tumor_mm3, overwrite=overwrite, graph=graph,
                     backend=backend, precision=precision, cache_dir=cache_dir,
                     calibration=calibration,
                     shard=parse_shard(shard), output_format=output_format)
    if preview is not None:
        from flarecli.core.io.outputs import check_output_dir

        check_output_dir(preview, "--preview", case_dirs=[input_dir, model])
    results, record = predict_folder(input_dir, run, {"--profile": profile, "--stats": stats})
    if profile and record.get("writer", True):
        write_json(profile, {k: record[k] for k in ("scans", "summary", "device", "backends",
                                                    "model_load_seconds")})
    s = record["summary"]
    mean = s["mean_seconds"]["total"]
    skipped = sum(1 for r in results if r.skipped)
    out.print(f"segmented {count(s['scans'], 'scan')} into {output_dir} "
              f"(skipped {skipped} existing)"
              + (f", {mean:.2f} s per scan" if mean else ""), highlight=False)
    if preview is not None:
        draw_previews(results, preview)
    if stats and record.get("writer", True):
        write_json(stats, output_stats(record["scans"], min_tumor_mm3))
    finish(results)


def draw_previews(results, folder: Path) -> None:
    """A preview PNG of each output this process wrote or kept."""
    from flarecli.commands._ui import problem, steps
    from flarecli.core.inference.record import written
    from flarecli.core.preview.render import preview_case

    todo = [r for r in results if written(r.to_json())]
    with steps(f"previews into {folder}", len(todo)) as advance:
        for r in todo:
            message = preview_case((r.case, r.output, r.image,
                                    str(Path(folder) / f"{r.case}.png"), r.series_uid))
            if message:
                problem(r.case, f"preview: {message}")
            advance()


def output_stats(scans: list[dict], min_tumor_mm3: float | None) -> dict:
    """``flare stats`` of the outputs the run record lists (every rank's, earlier runs'
    too) with their input scans (HU statistics)."""
    from flarecli.commands._ui import steps
    from flarecli.core.inference.record import written
    from flarecli.core.labels import MIN_TUMOR_MM3
    from flarecli.core.quantification import stats as core

    minimum = MIN_TUMOR_MM3 if min_tumor_mm3 is None else min_tumor_mm3
    cases = []
    todo = [scan for scan in scans if written(scan)]
    with steps("statistics", len(todo)) as advance:
        for scan in todo:
            found, _ = core.stats_case(core.StatsJob(scan["case"], scan["output"],
                                                     scan["image"], minimum,
                                                     scan.get("series_uid")))
            if found is not None:
                cases.append(found)
            advance()
    return core.stats_json(cases, minimum)
