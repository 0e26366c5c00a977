"""``flare synth OUT``: generate a FLARE-like synthetic dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flarecli.commands._ui import WORKERS, err, out, track
from flarecli.core.words import count


def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write the dataset into."),
    train: int = typer.Option(20, "--train", min=0, help="Partially labeled training cases."),
    unlabeled: int = typer.Option(10, "--unlabeled", min=0, help="Unlabeled training cases."),
    test: int = typer.Option(5, "--test", min=0, help="Fully labeled test cases."),
    seed: int = typer.Option(0, "--seed", min=0,
                             help="Random seed (the dataset is fully determined)."),
    size: int = typer.Option(
        96, "--size", help="In-plane matrix size. 96 = small (CPU work); 512 = realistic."
    ),
    workers: int = WORKERS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate a dataset flare "
                                   "synth made with other settings (never another folder)."),
) -> None:
    """Generate a FLARE-like phantom dataset with FLARE23's partial-label patterns.

    Writes imagesTr/labelsTr (partial labels), imagesUn (unlabeled), labelsFull (complete truth),
    imagesTs/labelsTs (fully labeled test split), dataset.json and synth.json. Re-running the
    same command resumes: finished cases are kept.
    """
    from flarecli.core.parallel import imap_ordered
    from flarecli.core.recipes.spec import SynthConfig
    from flarecli.core.synth import dataset as core

    config = SynthConfig(train, unlabeled, test, size)
    t0 = time.perf_counter()
    jobs = core.prepare(config, seed, out_dir, overwrite)
    records = list(track(imap_ordered(core.make_case, jobs, workers), len(jobs), "synth"))
    data = core.finish(config, seed, out_dir, records)
    seconds = time.perf_counter() - t0
    counts = {}
    for r in data["cases"]:
        key = r["pattern"] or {"un": "unlabeled", "ts": "test"}[r["split"]]
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    out.print(f"wrote {count(len(records), 'case')} to {out_dir} ({summary})", highlight=False)
    err.print(f"{seconds:.1f} s", highlight=False)
