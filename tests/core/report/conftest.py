"""A real flare folder to report on: the smoke demo, plus the outputs the demo does not
write (infer's --stats and --preview, evaluate's --json/--csv, a CLI pseudolabel run)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest


def flare(*args) -> None:
    from flarecli.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            assert not e.code, (args, e.code)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory) -> Path:
    """``demo/`` of ``flare demo --preset smoke`` (about 20 s), with ``demo/more/``: infer of
    the test split with --stats and --preview, and evaluate --json --csv of it."""
    root = tmp_path_factory.mktemp("report") / "demo"
    flare("demo", root, "--preset", "smoke", "--device", "cpu")
    more = root / "more"
    flare("infer", root / "data" / "imagesTs", more / "pred", "--model", root / "run" / "student",
          "--device", "cpu", "--stats", more / "stats.json", "--preview", more / "previews")
    flare("evaluate", more / "pred", root / "data" / "labelsTs", "--json", more / "eval.json",
          "--csv", more / "eval.csv")
    return root


def case_means(csv_path: Path, classes: range) -> dict[str, float]:
    """Mean DSC over ``classes`` per case, straight from an evaluate CSV."""
    sums: dict[str, list[float]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            if int(row["label"]) in classes and row["annotated"] == "1" and row["dsc"] not in (
                    "", "nan"):
                sums.setdefault(row["case"], []).append(float(row["dsc"]))
    return {c: sum(v) / len(v) for c, v in sums.items()}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
