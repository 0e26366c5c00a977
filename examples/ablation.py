"""The shape of StMt's ablation (Table 3) on flare's synthetic data.

Usage (from the repository root, after the README's setup)::

    .venv/bin/python examples/ablation.py ablation-run               # 2-core CPU budget
    .venv/bin/python examples/ablation.py ablation-run --seeds 0,1,2 # mean over seeds
    .venv/bin/python examples/ablation.py ablation-run --preset paper --device cuda

Settings (every organ model gets the same network, input size and number of steps, from
scratch; both tumor models start from b's organ model; all share one coarse abdomen model
trained on the fully labelled cases):

a. naive: the partial labels taken as complete (``flare train`` on the dataset folder);
b. FSO: the fully labelled cases only (the teacher);
c. self-training: b's pseudo-labels of the partially labelled cases, corrected with their
   annotation (FL + CPL);
d. c plus b's pseudo-labels of the unlabeled cases (FL + CPL + PL, l1 = 1.0, l2 = 0.5);
e. FST: the tumor model supervised by the tumor annotation only (``--mt-weight 0``);
f. the mean-teacher tumor model (``--mt-weight 1``).

Organ scores come from a-d run end to end without a tumor model; tumor scores from e and f
overlaid on d's organs. The report (default ``examples/ablation.md``) holds the settings, the
seeds, the command and the tables; text below its ``NOTES_MARK`` line is kept on rewrite.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import typer

from flarecli.commands.demo import PRESETS, run_step
from flarecli.core.labels import LABELS, ORGANS, TUMOR

NOTES_MARK = "<!-- notes: text below this line is kept when the script rewrites the report -->"

#: Dataset per preset: few fully labelled cases, many partial ones, unlabeled ones.
DATA = {"smoke": dict(train=10, unlabeled=2, test=2, size=48),  # seconds: the test suite's
        "cpu": dict(train=40, unlabeled=20, test=8, size=96),
        "paper": dict(train=200, unlabeled=100, test=20, size=256)}

ORGAN_SETTINGS = {
    "a": "naive: partial labels taken as complete",
    "b": "FSO: fully labelled cases only",
    "c": "b + corrected pseudo-labels of the partial cases (FL + CPL)",
    "d": "c + pseudo-labels of the unlabeled cases (FL + CPL + PL)",
}
TUMOR_SETTINGS = {
    "e": "FST: tumor model, supervised only",
    "f": "mean-teacher tumor model",
}

app = typer.Typer(add_completion=False)


def model_dir(folder: Path, parts: dict[str, Path]) -> Path:
    """A model folder for ``flare infer``/``pseudolabel`` from trained stage folders."""
    for name, src in parts.items():
        shutil.rmtree(folder / name, ignore_errors=True)
        shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("checkpoint_*"))
    return folder


def one_seed(out: Path, preset: str, seed: int, device: str) -> dict[str, dict]:
    """Run every setting for one seed; returns the evaluate summary per setting."""
    p, d = PRESETS[preset], DATA[preset]
    data, runs, models = out / "data", out / "runs", out / "models"
    dev = ["--seed", seed, "--device", device]
    coarse = ["--stage", "coarse", "--size", p["coarse_size"], *p["coarse"], *dev]
    fine = ["--stage", "fine", "--size", p["fine_size"], *p["teacher"], *dev]
    tumor = ["--stage", "fine", "--size", p["fine_size"], *p["tumor"], *dev]
    tta = ["--tta"] if p["tta"] else []
    manifest = runs / "corrected" / "manifest.json"
    without_pl = runs / "corrected" / "manifest-fl-cpl.json"

    run_step("synthetic dataset", ["synth", data, "--train", d["train"], "--unlabeled",
                                   d["unlabeled"], "--test", d["test"], "--size", d["size"],
                                   "--seed", seed])
    run_step("audit", ["audit", data, "--json", runs / "audit.json"])
    run_step("coarse abdomen model (FL cases)",
             ["train", runs / "audit.json", "--out", runs / "shared", *coarse])
    run_step("b. FSO organ model", ["train", runs / "audit.json", "--out", runs / "b",
                                    "--target", "organs", *fine])
    teacher = model_dir(models / "b", {"coarse": runs / "shared" / "coarse",
                                       "organs": runs / "b" / "organs"})
    for split in ("imagesTr", "imagesUn"):
        run_step(f"pseudo-labels of {split}", ["pseudolabel", data / split, runs / "pseudo",
                                                 "--model", teacher, *tta, "--overwrite",
                                                 "--device", device])
    run_step("correction", ["correct", runs / "pseudo", data / "labelsTr", runs / "corrected",
                          "--overwrite"])
    full = json.loads(manifest.read_text())
    full["cases"] = [c for c in full["cases"] if c.get("kind") != "PL"]
    without_pl.write_text(json.dumps(full, indent=2) + "\n")

    sources = {"a": [data], "c": [without_pl], "d": [manifest, "--l1", "1.0", "--l2", "0.5"]}
    for key, source in sources.items():
        run_step(f"{key}. organ model", ["train", *source[:1], "--out", runs / key, "--target",
                                          "organs", *source[1:], *fine])
    for key, weight in (("e", "0"), ("f", "1")):  # both start from b's organ features
        run_step(f"{key}. tumor model", ["train", manifest, "--out", runs / key, "--target",
                                          "tumor", "--mt-weight", weight, "--init",
                                          runs / "b" / "organs", *tumor])

    summaries = {}
    for key in (*ORGAN_SETTINGS, *TUMOR_SETTINGS):
        parts = {"coarse": runs / "shared" / "coarse"}
        if key in ORGAN_SETTINGS:
            parts["organs"] = runs / key / "organs"
        else:
            parts.update(organs=runs / "d" / "organs", tumor=runs / key / "tumor")
        folder = model_dir(models / key, parts)
        pred, scores = out / "predictions" / key, out / "scores" / f"{key}.json"
        run_step(f"{key}. inference", ["infer", data / "imagesTs", pred, "--model", folder,
                                       "--overwrite", "--device", device])
        run_step(f"{key}. evaluation", ["evaluate", pred, data / "labelsTs", "--json", scores])
        summaries[key] = json.loads(scores.read_text())
    return summaries


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def report(results: dict[int, dict[str, dict]], preset: str, command: str, minutes: float,
           old_notes: str) -> str:
    """The markdown report: settings, scores (mean over seeds), ordering checks."""
    p, d = PRESETS[preset], DATA[preset]
    seeds = sorted(results)

    def score(key: str, field: str) -> float | None:
        return _mean([results[s][key][field] for s in seeds])

    def per_class(key: str, c: int) -> float | None:
        return _mean([results[s][key]["per_class"][str(c)]["dsc"] for s in seeds])

    lines = [
        "# StMt ablation (the shape of Table 3) on synthetic data", "",
        "Generated by `examples/ablation.py`. Regenerate with:", "",
        f"    {command}", "",
        f"Preset `{preset}`, seed(s) {', '.join(map(str, seeds))}; {minutes:.0f} min in all.", "",
        "## Data and budget", "",
        f"- `flare synth --train {d['train']} --unlabeled {d['unlabeled']} --test {d['test']} "
        f"--size {d['size']}` per seed: FLARE23's label patterns (10 % of the training cases "
        "carry all 13 organs, 20 % five organs, 27 % five organs and tumors, 40 % only tumors, "
        "3 % other subsets); the test split is fully labelled.",
        f"- Every organ model: `--size {p['fine_size']} {' '.join(p['teacher'])}`, from "
        f"scratch; both tumor models: `{' '.join(p['tumor'])}`, from b's organ model "
        "(`--init`); one shared coarse model "
        f"(`--size {p['coarse_size']} {' '.join(p['coarse'])}`) on the fully labelled cases.",
        "- Pseudo-labels: setting b's model" + (" with mirror TTA" if p["tta"] else "") + ".",
        "- Scores: `flare evaluate` (FLARE DSC and NSD) on the test split, end to end "
        "(coarse -> fine -> postprocess), mean over the test cases, then over seeds.", "",
        "## Results", "",
        "| setting | | organ DSC | organ NSD | tumor DSC | tumor NSD |",
        "|---|---|---|---|---|---|",
    ]
    for key, text in {**ORGAN_SETTINGS, **TUMOR_SETTINGS}.items():
        organ = key in ORGAN_SETTINGS
        row = [score(key, "organ_dsc"), score(key, "organ_nsd")] if organ else ["", ""]
        row += ["", ""] if organ else [score(key, "tumor_dsc"), score(key, "tumor_nsd")]
        lines.append(f"| ({key}) | {text} | " + " | ".join(
            v if isinstance(v, str) else _fmt(v) for v in row) + " |")
    names = [LABELS[c] for c in ORGANS]
    lines += ["", "Organ DSC per class (mean over test cases and seeds):", "",
              "| setting | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for key in ORGAN_SETTINGS:
        lines.append(f"| ({key}) | " + " | ".join(_fmt(per_class(key, c)) for c in ORGANS)
                     + " |")
    lines += ["", f"Tumor DSC per setting: e {_fmt(per_class('e', TUMOR))}, "
              f"f {_fmt(per_class('f', TUMOR))}.", "", "## The paper's ordering", ""]
    o = {k: score(k, "organ_dsc") for k in ORGAN_SETTINGS}
    t = {k: score(k, "tumor_dsc") for k in TUMOR_SETTINGS}
    for left, op, right, vals in (("a", "<", "b", o), ("b", "<", "c", o), ("c", "<=", "d", o),
                                  ("e", "<", "f", t)):
        if vals[left] is None or vals[right] is None:
            verdict = "not measurable"
        else:
            holds = vals[left] < vals[right] if op == "<" else vals[left] <= vals[right] + 0.005
            verdict = "holds" if holds else "does not hold"
        lines.append(f"- {left} {op} {right}: {verdict} ({_fmt(vals[left])} vs "
                     f"{_fmt(vals[right])})")
    lines += ["", NOTES_MARK, old_notes.rstrip("\n") if old_notes else ""]
    return "\n".join(lines).rstrip("\n") + "\n"


@app.command()
def main(
    out_dir: Path = typer.Argument(Path("ablation-run"), help="Folder for every artefact."),
    preset: str = typer.Option("cpu", "--preset", help="smoke, cpu or paper (GPU)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    device: str = typer.Option("auto", "--device"),
    report_path: Path = typer.Option(Path(__file__).with_suffix(".md"), "--report"),
) -> None:
    if preset not in DATA:
        raise typer.BadParameter(f"choose one of {sorted(DATA)}", param_hint="--preset")
    seed_list = [int(s) for s in seeds.split(",")]
    t0 = time.perf_counter()
    results = {s: one_seed(out_dir / f"seed{s}", preset, s, device) for s in seed_list}
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
    old = report_path.read_text() if report_path.is_file() else ""
    notes = old.split(NOTES_MARK, 1)[1].lstrip("\n") if NOTES_MARK in old else ""
    command = ".venv/bin/python examples/ablation.py " + shlex.join(sys.argv[1:])
    report_path.write_text(report(results, preset, command, (time.perf_counter() - t0) / 60,
                                  notes))
    typer.echo(f"report: {report_path}; scores: {results_path}")


if __name__ == "__main__":
    app()
