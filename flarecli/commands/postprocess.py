"""``flare postprocess``: largest connected component per organ, small tumor specks removed."""

from __future__ import annotations

from pathlib import Path

import typer

from flarecli.commands._folder import fail_if_any, note_stray, run_cases
from flarecli.commands._ui import MIN_TUMOR_MM3, OVERWRITE, WORKERS, note, out, problem
from flarecli.core.words import count


def postprocess(
    input_dir: Path = typer.Argument(..., help="Folder of label maps (<case>.nii.gz)."),
    output_dir: Path = typer.Argument(..., help="Folder for the cleaned label maps."),
    connectivity: int = typer.Option(26, "--connectivity", help="6, 18 or 26."),
    min_tumor_mm3: float = MIN_TUMOR_MM3,
    workers: int = WORKERS,
    overwrite: bool = OVERWRITE,
) -> None:
    """Keep the largest 3-D component of each organ; drop tumor components below a size.

    Output: uint8 label maps with exactly the input geometry. Existing outputs are skipped
    (resume) unless --overwrite or older than their input. Exit code 4 if some cases failed
    (the rest are written).
    """
    from flarecli.core.io.files import SOURCE_CHANGED
    from flarecli.core.postprocessing import folder as core

    plan = core.plan(input_dir, output_dir, connectivity, min_tumor_mm3, overwrite)
    note_stray(plan.stray)
    failed = done = skipped = 0
    removed_total: dict[int, int] = {}
    for r in run_cases(plan.jobs, workers, "postprocess", each=core.run_case,
                       before=plan.failed):
        if r.error:
            failed += 1
            problem(r.case, r.error)
        elif r.skipped:
            skipped += 1
        else:
            done += 1
            if r.redone:
                note(r.case, f"{SOURCE_CHANGED}; computed again")
            for c, n in r.removed.items():
                removed_total[c] = removed_total.get(c, 0) + n
    removed = ", ".join(f"{c}: {n}" for c, n in sorted(removed_total.items())) or "none"
    out.print(f"postprocessed {count(done, 'case')} into {output_dir} "
              f"(skipped {skipped} existing); "
              f"voxels removed per class: {removed}", highlight=False)
    fail_if_any(failed, len(plan.jobs) + len(plan.failed))
