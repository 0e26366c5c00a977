"""The shape of StMt's ablation (Table 3) on flare's synthetic data, as one recipe.

Usage (from the repository root, after the README's setup)::

    .venv/bin/python examples/ablation.py ablation-run               # 2-core CPU budget
    .venv/bin/python examples/ablation.py ablation-run --seeds 0,1,2 # mean over seeds
    .venv/bin/python examples/ablation.py ablation-run --preset paper --device cuda

The script writes the ablation as a recipe derived from ``stmt`` (with the chosen preset)
and runs it with flare's generic pipeline runner, then infers and scores each setting's model
-- all through the Python API (``flarecli.api`` and the core), no command line. Every organ
model gets the same network, input size and number of steps (the ``stmt`` teacher stage's),
from scratch; both tumor models are stmt's tumor stage, from scratch, differing only in the
method, and overlaid on d's organs by the student's merge rule; all share one coarse model
trained on the fully labelled cases (``--settings e,f`` runs the tumor arm with b and d only):

a. naive: the partial labels taken as complete (the dataset folder as the source);
b. FSO: the fully labelled cases only (the teacher);
c. self-training: b's pseudo-labels of the partially labelled cases, corrected with their
   annotation (FL + CPL);
d. c plus b's pseudo-labels of the unlabeled cases (FL + CPL + PL, l1 = 1.0, l2 = 0.5);
e. FST: a supervised tumor model (the tumor annotation only);
f. the mean-teacher tumor model.

Organ scores come from a-d run end to end without a tumor model; tumor scores from e and f
overlaid on d's organs. The report (default ``examples/ablation.md``) holds the settings, the
seeds, the command and the tables; text below its ``NOTES_MARK`` line is kept on rewrite.
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from flarecli.api import PipelineRun, load_recipe, recipe_to_json, run_pipeline
from flarecli.core.inference.folder import PredictRun, input_cases, predict
from flarecli.core.labels import LABELS, ORGANS, TUMOR
from flarecli.core.pipeline.demo import evaluate_folder, make_dataset
from flarecli.core.recipes.load import recipe_from_json
from flarecli.core.recipes.spec import SynthConfig as Demo

NOTES_MARK = "<!-- notes: text below this line is kept when the script rewrites the report -->"

#: Dataset per preset: few fully labelled cases, many partial ones, unlabeled ones.
DATA = {"smoke": Demo(train=10, unlabeled=2, test=2, size=48),  # seconds: the test suite's
        "cpu": Demo(train=40, unlabeled=20, test=8, size=96),
        "paper": Demo(train=200, unlabeled=100, test=20, size=256)}

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


ALL = (*ORGAN_SETTINGS, *TUMOR_SETTINGS)


def ablation_recipe(preset: str, settings: tuple[str, ...] = ALL) -> dict[str, Any]:
    """The ablation as a recipe: stmt's stages for every setting, one graph per setting (b
    and d are always trained: the pseudo-labels and the tumor arms' organs need them)."""
    base = recipe_to_json(load_recipe("stmt", preset))
    stages = base["stages"]
    organ = stages["teacher"]  # every organ model: the teacher's network and schedule
    self_training = stages["organs"]["method"]

    def organs(method):
        return {**copy.deepcopy(organ), "method": method}

    new_stages = {
        "coarse": stages["coarse"],
        "organs_a": organs({"name": "supervised"}),
        "organs_b": organs({"name": "supervised"}),
        "organs_c": organs(self_training),
        "organs_d": organs(self_training),
        "tumor_e": {**stages["tumor"], "method": {"name": "supervised"}},
        "tumor_f": stages["tumor"],
    }
    # the tumor arms overlay their lesions on d's organs by the student's own merge rule
    tumor_output = next(o for o in base["models"]["student"]["outputs"]
                        if o["stage"] == "tumor")
    roi = base["models"]["student"]["roi"]
    post = base["models"]["student"]["postprocess"]
    models = {key: {"roi": roi, "postprocess": post, "outputs": [{"stage": f"organs_{key}"}]}
              for key in ORGAN_SETTINGS}
    models.update({key: {"roi": roi, "postprocess": post,
                         "outputs": [{"stage": "organs_d"},
                                     {**tumor_output, "stage": f"tumor_{key}"}]}
                   for key in TUMOR_SETTINGS})
    tta = next(s for s in base["pipeline"]["steps"] if s["kind"] == "pseudolabel")["tta"]

    def train(stage, source, data, init=None):
        step = {"kind": "train", "name": stage, "stage": stage, "model": "ablation",
                "source": source, "data": data}
        return {**step, "init": init} if init else step

    steps = [
        train("coarse", "audit", "FL"),
        train("organs_b", "audit", "FL"),
        {"kind": "pseudolabel", "name": "pseudo", "model": "ablation", "graph": "b",
         "cases": "needs_pseudo", "tta": tta},
        {"kind": "correct", "name": "corrected", "pseudo": "pseudo"},
        *([train("organs_a", "dataset", "labeled")] if "a" in settings else []),
        *([train("organs_c", "corrected", {"kinds": ["FL", "CPL"]})] if "c" in settings
          else []),
        train("organs_d", "corrected", "all"),
        # both tumor models from scratch, on the same data and schedule: only the method differs
        train("tumor_e", "corrected", "tumor_annotated"),
        train("tumor_f", "corrected", "tumor_annotated"),
    ]
    models = {key: graph for key, graph in models.items() if key in settings}
    return {**base, "name": "stmt-ablation", "title": "StMt's Table 3 settings, one recipe",
            "stages": new_stages, "models": models,
            "pipeline": {"final": "ablation", "final_graph": "d", "steps": steps}}


def one_seed(out: Path, preset: str, seed: int, device: str,
             settings: tuple[str, ...] = ALL) -> dict[str, dict]:
    """Run the settings for one seed; returns the evaluate summary per setting."""
    data, run = out / "data", out / "run"
    make_dataset(DATA[preset], data, seed, workers=1)
    recipe = recipe_from_json(ablation_recipe(preset, settings))
    result = run_pipeline(PipelineRun(recipe, data, run, device=device, seed=seed))
    cases, _ = input_cases(data / "imagesTs", out / "predictions")
    summaries = {}
    for key in (k for k in ALL if k in settings):
        pred = out / "predictions" / key
        predict(PredictRun("infer", result.final, pred, device=device, graph=key,
                           overwrite=True, argv=["ablation", key]), cases,
                str((data / "imagesTs").resolve()))
        summaries[key], _ = evaluate_folder(pred, data / "labelsTs", workers=1)
    return summaries


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def report(results: dict[int, dict[str, dict]], preset: str, command: str, minutes: float,
           old_notes: str) -> str:
    """The markdown report: settings, scores (mean over seeds), ordering checks."""
    d = DATA[preset]
    seeds = sorted(results)
    stages = ablation_recipe(preset)["stages"]  # every setting's stage, run or not

    def score(key: str, field: str) -> float | None:
        return _mean([results[s][key][field] for s in seeds if key in results[s]])

    def per_class(key: str, c: int) -> float | None:
        return _mean([results[s][key]["per_class"][str(c)]["dsc"] for s in seeds
                      if key in results[s]])

    def lesion(key: str, field: str) -> float | None:
        return _mean([(results[s][key].get("lesions") or {}).get(field) for s in seeds
                      if key in results[s]])

    def schedule(stage: dict) -> str:
        geometry = stage["geometry"]
        shape = (f"input {geometry['size_zyx']}" if geometry.get("size_zyx") else
                 f"patches {geometry.get('patch_zyx')} at native spacing")
        return (f"{stage['network']['arch']} {stage['network']['args']}, {shape}, "
                f"{stage['epochs']} x {stage['iterations']} "
                f"steps of {stage['batch_size']}, {stage['optimizer']['name']} lr "
                f"{stage['optimizer']['lr']}")

    lines = [
        "# StMt ablation (the shape of Table 3) on synthetic data", "",
        "Generated by `examples/ablation.py`. Regenerate with:", "",
        f"    {command}", "",
        f"Preset `{preset}`, seed(s) {', '.join(map(str, seeds))}; {minutes:.0f} min in all.", "",
        "## Data and budget", "",
        f"- `flare synth --train {d.train} --unlabeled {d.unlabeled} --test {d.test} "
        f"--size {d.size}` per seed: FLARE23's label patterns (10 % of the training cases "
        "carry all 13 organs, 20 % five organs, 27 % five organs and tumors, 40 % only tumors, "
        "3 % other subsets); the test split is fully labelled.",
        f"- The settings are one recipe derived from `stmt` preset `{preset}` "
        "(`ablation_recipe()` in the script) run by flare's pipeline runner. Every organ "
        f"model: {schedule(stages['organs_b'])}, from scratch; both tumor models: "
        f"{schedule(stages['tumor_f'])}, from scratch, only the method differing, overlaid "
        "on d's organs by the student's merge rule; one shared coarse model "
        f"({schedule(stages['coarse'])}) on the fully labelled cases.",
        "- Pseudo-labels: setting b's model.",
        "- Scores: FLARE DSC and NSD on the test split, end to end (coarse -> fine -> "
        "postprocess), mean over the test cases, then over seeds.", "",
        "## Results", "",
        "| setting | | organ DSC | organ NSD | tumor DSC | tumor NSD |",
        "|---|---|---|---|---|---|",
    ]
    for key, text in {**ORGAN_SETTINGS, **TUMOR_SETTINGS}.items():
        if not any(key in results[sd] for sd in seeds):
            continue
        organ = key in ORGAN_SETTINGS
        row = [score(key, "organ_dsc"), score(key, "organ_nsd")] if organ else ["", ""]
        row += ["", ""] if organ else [score(key, "tumor_dsc"), score(key, "tumor_nsd")]
        lines.append(f"| ({key}) | {text} | " + " | ".join(
            v if isinstance(v, str) else _fmt(v) for v in row) + " |")
    names = [LABELS[c] for c in ORGANS]
    lines += ["", "Organ DSC per class (mean over test cases and seeds):", "",
              "| setting | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for key in (k for k in ORGAN_SETTINGS if any(k in results[sd] for sd in seeds)):
        lines.append(f"| ({key}) | " + " | ".join(_fmt(per_class(key, c)) for c in ORGANS)
                     + " |")
    lines += ["", f"Tumor DSC per setting: e {_fmt(per_class('e', TUMOR))}, "
              f"f {_fmt(per_class('f', TUMOR))}.", "",
              "Tumor arms per seed (DSC; lesion sensitivity, and for lesions of at least 1 ml; "
              "false positives per case):", "",
              "| seed | e DSC | f DSC | f - e | e sens. | f sens. | e sens. >= 1 ml | "
              "f sens. >= 1 ml | e FP/case | f FP/case |", "|---|" + "---|" * 9]
    for sd in seeds:
        row = results[sd]
        if "e" not in row or "f" not in row:
            continue
        e, f = row["e"], row["f"]
        le, lf = e.get("lesions") or {}, f.get("lesions") or {}
        diff = (None if e["tumor_dsc"] is None or f["tumor_dsc"] is None
                else f["tumor_dsc"] - e["tumor_dsc"])
        lines.append(f"| {sd} | " + " | ".join(_fmt(v) for v in (
            e["tumor_dsc"], f["tumor_dsc"], diff, le.get("sensitivity"), lf.get("sensitivity"),
            le.get("sensitivity_1ml_or_more"), lf.get("sensitivity_1ml_or_more"),
            le.get("fp_per_case"), lf.get("fp_per_case"))) + " |")
    lines += ["", f"Mean over seeds: lesion sensitivity e {_fmt(lesion('e', 'sensitivity'))}, "
              f"f {_fmt(lesion('f', 'sensitivity'))}; FP per case e "
              f"{_fmt(lesion('e', 'fp_per_case'))}, f {_fmt(lesion('f', 'fp_per_case'))}.", "",
              "## The paper's ordering", "",
              "Each line compares the means over seeds as they are; only c <= d allows a stated "
              "0.005 (the paper's c and d differ by less than its seeds do).", ""]
    o = {k: score(k, "organ_dsc") for k in ORGAN_SETTINGS}
    t = {k: score(k, "tumor_dsc") for k in TUMOR_SETTINGS}
    for left, op, right, vals in (("a", "<", "b", o), ("b", "<", "c", o), ("c", "<=", "d", o),
                                  ("e", "<", "f", t)):
        if vals.get(left) is None or vals.get(right) is None:
            verdict = "not measurable"
        else:
            holds = vals[left] < vals[right] if op == "<" else vals[left] <= vals[right] + 0.005
            verdict = "holds" if holds else "does not hold"
        within = " (within 0.005)" if op == "<=" else ""
        lines.append(f"- {left} {op} {right}{within}: {verdict} ({_fmt(vals.get(left))} vs "
                     f"{_fmt(vals.get(right))})")
    lines += ["", NOTES_MARK, old_notes.rstrip("\n") if old_notes else ""]
    return "\n".join(lines).rstrip("\n") + "\n"


@app.command()
def main(
    out_dir: Path = typer.Argument(Path("ablation-run"), help="Folder for every artefact."),
    preset: str = typer.Option("cpu", "--preset", help="smoke, cpu or paper (GPU)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    settings: str = typer.Option(",".join(ALL), "--settings",
                                 help="Comma-separated settings to run (b and d always train)."),
    device: str = typer.Option("auto", "--device"),
    report_path: Path = typer.Option(Path(__file__).with_suffix(".md"), "--report"),
) -> None:
    if preset not in DATA:
        raise typer.BadParameter(f"choose one of {sorted(DATA)}", param_hint="--preset")
    seed_list = [int(s) for s in seeds.split(",")]
    chosen = tuple(k for k in ALL if k in settings.split(",") or k in ("b", "d"))
    t0 = time.perf_counter()
    results = {s: one_seed(out_dir / f"seed{s}", preset, s, device, chosen) for s in seed_list}
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
