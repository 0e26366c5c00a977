"""``flare infer``: two-stage segmentation of a folder of CT scans."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._predict import finish, predict_folder
from flarecli.commands._ui import out


def infer(
    input_dir: Path = typer.Argument(..., help="Folder of CT scans (<case>_0000.nii.gz)."),
    output_dir: Path = typer.Argument(..., help="Folder for the label maps (<case>.nii.gz)."),
    model: Path = typer.Option(..., "--model", help="Model folder: coarse/, organs/ [tumor/]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    weights: str | None = typer.Option(None, "--weights", help="best or final (default: each "
                                       "bundle's own choice)."),
    tta: bool = typer.Option(False, "--tta", help="Average softmax over the mirror "
                             "views the model was trained on (S-I, A-P; never L-R)."),
    postprocess: bool = typer.Option(True, "--postprocess/--no-postprocess",
                                     help="Largest component per organ, small tumors out."),
    connectivity: int = typer.Option(26, "--connectivity"),
    min_tumor_mm3: float = typer.Option(100.0, "--min-tumor-mm3"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo existing outputs."),
    profile: Path | None = typer.Option(None, "--profile", dir_okay=False,
                                        help="Write per-scan timings and GPU memory here."),
) -> None:
    """Segment 13 organs and tumors: coarse abdomen -> fine ROI -> tumor overlaid on organs.

    Outputs are uint8 with exactly each input's grid. Existing outputs are skipped (resume).
    Exit code 4 if some scans failed (the others are written).
    """
    from flarecli.commands._ui import write_json

    results, record = predict_folder(
        "infer", input_dir, output_dir, model, device=device, weights=weights, tta=tta,
        with_tumor=True, clean=postprocess, overwrite=overwrite, min_score=None,
        connectivity=connectivity, min_tumor_mm3=min_tumor_mm3)
    if profile:
        write_json(profile, {k: record[k] for k in ("scans", "summary", "device",
                                                    "model_load_seconds")})
    s = record["summary"]
    mean = s["mean_seconds"]["total"]
    skipped = sum(1 for r in results if r.skipped)
    out.print(f"segmented {s['scans']} scans into {output_dir} (skipped {skipped} existing)"
              + (f", {mean:.2f} s per scan" if mean else ""), highlight=False)
    finish(results)
