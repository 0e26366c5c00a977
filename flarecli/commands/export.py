"""``flare export``: a model folder as one zip to share."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._ui import out
from flarecli.core.words import count


def export(
    model: Path = typer.Argument(..., help="Model folder (one bundle per stage, recipe.json)."),
    target: Path = typer.Argument(..., help="The zip to write, e.g. model.zip."),
) -> None:
    """Pack a model folder into one zip: the recipe, each stage's bundle and weights (state
    dicts with their SHA-256), and a README of the model's provenance. flare infer --model
    takes the zip as it takes the folder.
    """
    from flarecli.core.errors import InputError
    from flarecli.core.io.archive import export_model
    from flarecli.core.io.cases import require_dir
    from flarecli.core.io.outputs import check_output_file, inside

    require_dir(model, "model")
    if target.suffix.lower() != ".zip":
        raise InputError(f"{target}: the export is a zip; name it *.zip")
    if inside(target, model):  # it would become part of the model it packs
        raise InputError(f"{target}: the export would land inside the model folder {model}",
                         hint="write the zip beside the model folder")
    check_output_file(target, "export", reads=list(model.rglob("*")))
    members = export_model(model, target)
    out.print(f"exported {count(len(members), 'file')} of {model} to {target}", highlight=False)
