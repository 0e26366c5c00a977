"""``flare report``: one HTML page of what flare's commands wrote into a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._ui import note, out
from flarecli.core.words import count


def report(
    folder: Path = typer.Argument(..., help="A flare demo folder or a work folder: searched "
                                  "for audit, pseudolabel, infer, stats, evaluate, preview "
                                  "and training outputs."),
    page: Path = typer.Argument(..., help="The HTML page to write (e.g. report.html).",
                                dir_okay=False),
    images: str = typer.Option("auto", "--images", help="Previews: embed (data: URIs, the "
                               "page stands alone), link (relative paths: small, the folder "
                               "travels with it), none, or auto (embed up to 32 MB of "
                               "PNGs, else link)."),
    thumb_px: int = typer.Option(240, "--thumb-px", help="Width of embedded thumbnails "
                                 "(pixels)."),
    title: str | None = typer.Option(None, "--title", help="The page's title."),
) -> None:
    """Gather what flare wrote under FOLDER into one self-contained HTML page: a sortable,
    filterable table of cases (quality scores, DSC and NSD, tumor burden, volumes, label
    patterns) with preview thumbnails, a summary with the worst cases, an export of the
    selected case ids, and the training curves of every training run.

    Files are recognised by their content, not their names. A file that cannot be parsed
    is a note and is left out. The page needs no server and loads nothing from the network.
    """
    from flarecli.core.report.page import write_report

    result = write_report(folder, page, images=images, thumb_px=thumb_px, title=title)
    for path, message in result.notes:
        note(path, message)
    if result.images_reason:
        note(str(page), result.images_reason)
    out.print(f"wrote {page}: {count(result.cases, 'case')}, {count(result.columns, 'column')}, "
              f"{count(result.training, 'training run')} from {count(result.sources, 'source')}; "
              f"{result.bytes / 2**20:.1f} MB, images {result.images}", highlight=False)
