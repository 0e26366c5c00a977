"""``flare postprocess``: largest connected component per organ, small tumor specks removed."""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import typer

from flarecli.commands._ui import WORKERS, note, out, problem, track
from flarecli.core.words import count


def postprocess(
    input_dir: Path = typer.Argument(..., help="Folder of label maps (<case>.nii.gz)."),
    output_dir: Path = typer.Argument(..., help="Folder for the cleaned label maps."),
    connectivity: int = typer.Option(26, "--connectivity", help="6, 18 or 26."),
    min_tumor_mm3: float = typer.Option(
        100.0, "--min-tumor-mm3", help="Drop tumor components smaller than this (mm^3)."
    ),
    workers: int = WORKERS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo existing outputs."),
) -> None:
    """Keep the largest 3-D component of each organ; drop tumor components below a size.

    Output: uint8 label maps with exactly the input geometry. Existing outputs are skipped
    (resume) unless --overwrite. Exit code 4 if some cases failed (the rest are written).
    """
    from flarecli.core.errors import CasesFailed
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.postprocessing import folder as core

    plan = core.plan(input_dir, output_dir, connectivity, min_tumor_mm3, overwrite)
    for path, message in plan.stray:
        note(str(path), message)
    failed = done = skipped = 0
    removed_total: dict[int, int] = {}
    for r in chain(plan.failed, track(imap_ordered(core.run_case, plan.jobs, workers),
                                      len(plan.jobs), "postprocess")):
        if r.error:
            failed += 1
            problem(r.case, r.error)
        elif r.skipped:
            skipped += 1
        else:
            done += 1
            for c, n in r.removed.items():
                removed_total[c] = removed_total.get(c, 0) + n
    removed = ", ".join(f"{c}: {n}" for c, n in sorted(removed_total.items())) or "none"
    out.print(f"postprocessed {count(done, 'case')} into {output_dir} "
              f"(skipped {skipped} existing); "
              f"voxels removed per class: {removed}", highlight=False)
    if failed:
        raise CasesFailed(failed, len(plan.jobs) + len(plan.failed))
