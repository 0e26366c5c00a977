"""``flare pseudolabel``: teacher predictions for partially labelled and unlabeled scans."""

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
    write_csv,
)
from flarecli.core.words import count


def pseudolabel(
    input_dir: Path = SCANS,
    output_dir: Path = typer.Argument(..., help="Folder for the pseudo-labels."),
    model: Path = typer.Option(..., "--model", help="Teacher model folder or .zip (flare "
                               "export)."),
    device: str = DEVICE,
    backend: str = BACKEND,
    precision: str = PRECISION,
    calibration: Path | None = CALIBRATION,
    cache_dir: Path | None = CACHE_DIR,
    weights: str | None = typer.Option(None, "--weights", help="best or final."),
    tta: bool = TTA,
    with_tumor: bool = typer.Option(False, "--with-tumor", help="Include the tumor class "
                                    "(left out by default, as in seed 004)."),
    min_score: float | None = typer.Option(None, "--min-score", help="Write only cases "
                                           "whose quality score reaches this (0..1)."),
    scores: Path | None = typer.Option(None, "--scores", dir_okay=False,
                                       help="Quality CSV (default OUTPUT/scores.csv)."),
    overwrite: bool = OVERWRITE,
    shard: str | None = SHARD,
) -> None:
    """Pseudo-label scans with a teacher: connected-component clean-up, quality scores.

    The score of a case is its mean confidence (max softmax inside the predicted foreground)
    times the agreement of the TTA views (1 without --tta, or when the teacher was trained
    without mirroring and has no views to add). Cases below --min-score are not written (an
    earlier output of such a case is removed); the CSV lists every case.
    """
    from flarecli.core.inference.folder import PredictRun
    from flarecli.core.inference.record import scores_table
    from flarecli.core.inference.shards import parse_shard

    run = PredictRun("pseudolabel", model, output_dir, device=device, weights=weights,
                     tta=tta, with_tumor=with_tumor, postprocess=True, overwrite=overwrite,
                     scores=True, min_score=min_score,
                     backend=backend, precision=precision, cache_dir=cache_dir,
                     calibration=calibration,
                     shard=parse_shard(shard))
    suffix = f".shard-{run.shard[0]}-of-{run.shard[1]}" if run.shard else ""
    scores = scores or Path(output_dir) / f"scores{suffix}.csv"
    results, record = predict_folder(input_dir, run, {"--scores": scores})
    if record.get("writer", True):
        header, rows = scores_table(record)
        write_csv(scores, header, rows)
    written = sum(1 for r in results if not (r.rejected or r.error or r.skipped))
    rejected = sum(1 for r in results if r.rejected)
    out.print(f"pseudo-labelled {count(written, 'scan')} into {output_dir}"
              + (f"; {rejected} below --min-score {min_score}" if rejected else ""),
              highlight=False)
    finish(results)
