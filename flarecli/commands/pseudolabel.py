"""``flare pseudolabel``: teacher predictions for partially labelled and unlabeled scans."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._predict import finish, predict_folder
from flarecli.commands._ui import out, write_csv


def pseudolabel(
    input_dir: Path = typer.Argument(..., help="Folder of CT scans (<case>_0000.nii.gz)."),
    output_dir: Path = typer.Argument(..., help="Folder for the pseudo-labels."),
    model: Path = typer.Option(..., "--model", help="Teacher model folder (coarse/, organs/)."),
    device: str = typer.Option("auto", "--device"),
    weights: str | None = typer.Option(None, "--weights", help="best or final."),
    tta: bool = typer.Option(False, "--tta", help="Average softmax over the mirror "
                             "views the model was trained on (S-I, A-P; never L-R)."),
    with_tumor: bool = typer.Option(False, "--with-tumor", help="Include the tumor model "
                                    "(excluded by default, as in seed 004)."),
    min_score: float | None = typer.Option(None, "--min-score", help="Write only cases "
                                           "whose quality score reaches this (0..1)."),
    scores: Path | None = typer.Option(None, "--scores", dir_okay=False,
                                       help="Quality CSV (default OUTPUT/scores.csv)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Pseudo-label scans with a teacher: connected-component clean-up, quality scores.

    The score of a case is its mean confidence (max softmax inside the predicted foreground)
    times the agreement of the TTA views (1 without --tta, or when the teacher was trained
    without mirroring and has no views to add). Cases below --min-score are not written; the
    CSV lists every case.
    """
    from flarecli.core.errors import InputError

    if min_score is not None and not 0 <= min_score <= 1:
        raise InputError(f"--min-score {min_score}: must be within 0..1")
    results, record = predict_folder(
        "pseudolabel", input_dir, output_dir, model, device=device, weights=weights, tta=tta,
        with_tumor=with_tumor, clean=True, overwrite=overwrite, min_score=min_score,
        connectivity=26, min_tumor_mm3=100.0)
    header = ["case", "score", "confidence", "agreement", "written", *[f"volume_ml_{c}"
                                                                       for c in range(1, 14)]]
    def f(v):
        return "" if v is None else f"{v:.4f}"

    rows = []
    for r in record["scans"]:  # every case of the folder, this run's and earlier ones
        volumes = r.get("volumes_ml", {})
        rows.append([r["case"], f(r.get("score")), f(r.get("confidence")),
                     f(r.get("agreement")), int(not (r.get("rejected") or r.get("error"))),
                     *[volumes.get(str(c), "") for c in range(1, 14)]])
    write_csv(scores or Path(output_dir) / "scores.csv", header, rows)
    written = sum(1 for r in results if not (r.rejected or r.error or r.skipped))
    rejected = sum(1 for r in results if r.rejected)
    out.print(f"pseudo-labelled {written} scans into {output_dir}"
              + (f"; {rejected} below --min-score {min_score}" if rejected else ""),
              highlight=False)
    finish(results)
