"""``flare demo``: the whole StMt loop on a fresh synthetic dataset, step by step."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flarecli.commands._ui import err, out

#: Settings per preset: the synthetic dataset, the network input sizes and the options of each
#: training run (``coarse``: both abdomen models; ``teacher``: the FL-only organ model;
#: ``student``: the student's organ model; ``tumor``: the mean-teacher tumor model). With
#: ``warm`` the student starts from the teacher's weights (same network preset) and the tumor
#: model from the student's organ model: on 2 CPU cores every step counts and the short
#: schedule goes to the teacher, who sees only the few fully labelled cases. The paper preset
#: trains every model from scratch, as StMt does.
#:
#: CPU choices, measured on the synthetic data (organ model, 36 FL cases, 200 steps): a 32^3
#: input learns 2.8x faster per second than 48^3 (val Dice 0.36 vs 0.19), augmentation slows
#: early learning (0.12 with it, 0.19 without, at 48^3), and 32x32x48 (z, y, x) still keeps
#: 0.95 of the organ Dice through the resampling round trip (0.98 at 48^3). The tumor model
#: needs 400 steps at lr 1e-2 to stop over-segmenting (200 steps at 3e-3: 10,000-20,000
#: tumor voxels per scan, which the overlay takes from the organs).
_SMOKE_OPT = ["--model", "tiny", "--epochs", "1", "--iterations", "2", "--optimizer", "adamw",
              "--lr", "3e-3"]
_CPU_OPT = ["--optimizer", "adamw", "--deep-supervision", "--balanced-ce", "--no-augment"]
PRESETS: dict[str, dict] = {
    # seconds: a check that every step runs (the test suite's smoke test)
    "smoke": dict(train=8, unlabeled=2, test=2, synth_size=48, tta=False, warm=True,
                  coarse_size="16", fine_size="16",
                  coarse=_SMOKE_OPT, teacher=_SMOKE_OPT, student=_SMOKE_OPT,
                  tumor=_SMOKE_OPT),
    # the 2-core CPU: 542 s, mean organ DSC 0.58 (NSD 0.57), tumor DSC 0.02 (measured)
    "cpu": dict(train=40, unlabeled=10, test=6, synth_size=96, tta=True, warm=True,
                coarse_size="32", fine_size="32,32,48",
                coarse=["--model", "small", "--epochs", "20", "--iterations", "20",
                        "--lr", "1e-2", "--val-fraction", "0", *_CPU_OPT],
                teacher=["--model", "small", "--epochs", "30", "--iterations", "20",
                         "--lr", "1e-2", "--val-fraction", "0", *_CPU_OPT],
                student=["--model", "small", "--epochs", "10", "--iterations", "20",
                         "--lr", "3e-3", "--val-fraction", "0", *_CPU_OPT],
                tumor=["--model", "small", "--epochs", "20", "--iterations", "20",
                       "--lr", "1e-2", *_CPU_OPT]),
    # a GPU, the paper's networks, sizes and schedule
    "paper": dict(train=200, unlabeled=100, test=20, synth_size=256, tta=True, warm=False,
                  coarse_size="128", fine_size="192",
                  coarse=["--model", "student", "--epochs", "500", "--iterations", "250"],
                  teacher=["--model", "teacher", "--epochs", "500", "--iterations", "250"],
                  student=["--model", "student", "--epochs", "500", "--iterations", "250"],
                  tumor=["--model", "student", "--epochs", "500", "--iterations", "250"]),
}


def demo(
    out_dir: Path = typer.Argument(Path("demo"), help="Folder for every artefact."),
    preset: str = typer.Option("cpu", "--preset", help="smoke, cpu or paper (GPU)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the StMt loop: synth -> audit -> teacher -> pseudolabel -> correct -> student
    (coarse, organs on FL/CPL/PL, mean-teacher tumor) -> infer -> evaluate."""
    from flarecli.core.errors import check_choice

    check_choice("preset", preset, tuple(PRESETS))
    p = PRESETS[preset]
    data, run = out_dir / "data", out_dir / "run"
    dev = ["--device", device]
    common = ["--seed", str(seed), *dev]
    coarse = ["--size", p["coarse_size"], *p["coarse"], *common]
    teach = ["--size", p["fine_size"], *p["teacher"], *common]
    student = ["--size", p["fine_size"], *p["student"], *common]
    tumor = ["--size", p["fine_size"], *p["tumor"], *common]
    tta = ["--tta"] if p["tta"] else []
    redo = ["--overwrite"]  # a re-run retrains every model: nothing downstream may be stale

    def warm(name: str) -> list:
        return ["--init", run / "teacher" / name] if p["warm"] else []

    # the tumor model starts from the student's organ features (its heads start fresh)
    warm_tumor = ["--init", run / "student" / "organs"] if p["warm"] else []

    steps = [
        ("1. synthetic dataset", ["synth", data, "--train", p["train"], "--unlabeled",
                                  p["unlabeled"], "--test", p["test"], "--size",
                                  p["synth_size"], "--seed", seed]),
        ("2. audit", ["audit", data, "--json", run / "audit.json"]),
        ("3a. teacher: coarse abdomen model (FL cases)",
         ["train", run / "audit.json", "--out", run / "teacher", "--stage", "coarse",
          *coarse]),
        ("3b. teacher: organ model (FL cases)",
         ["train", run / "audit.json", "--out", run / "teacher", "--stage", "fine",
          "--target", "organs", *teach]),
        ("4a. pseudo-labels of the partially labelled scans",
         ["pseudolabel", data / "imagesTr", run / "pseudo", "--model", run / "teacher",
          *tta, *redo, *dev]),
        ("4b. pseudo-labels of the unlabeled scans",
         ["pseudolabel", data / "imagesUn", run / "pseudo", "--model", run / "teacher",
          *tta, *redo, *dev]),
        ("5. correction with the partial labels",
         ["correct", run / "pseudo", data / "labelsTr", run / "corrected", *redo]),
        ("6a. student: coarse model",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "coarse", *warm("coarse"), *coarse]),
        ("6b. student: organs on FL / CPL / PL (l1 = 1.0, l2 = 0.5)",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "fine", "--target", "organs", "--l1", "1.0", "--l2", "0.5", *warm("organs"),
          *student]),
        ("6c. student: mean-teacher tumor model",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "fine", "--target", "tumor", *warm_tumor, *tumor]),
        ("7a. inference on the test split",
         ["infer", data / "imagesTs", run / "predictions", "--model", run / "student",
          "--profile", run / "profile.json", *redo, *dev]),
        ("7b. evaluation against the truth",
         ["evaluate", run / "predictions", data / "labelsTs", "--csv", run / "scores.csv",
          "--json", run / "scores.json"]),
    ]
    t_start = time.perf_counter()
    for title, args in steps:
        run_step(title, args)
    out.print(f"demo finished in {time.perf_counter() - t_start:.0f} s; every artefact is in "
              f"{out_dir} (scores: {run / 'scores.json'})", highlight=False)


def run_step(title: str, args: list) -> float:
    """Run one flare command in this process under a titled rule; returns its seconds.

    Problems with some cases (DataError) are reported and the loop goes on; any other error
    stops it.
    """
    from flarecli.cli import app
    from flarecli.core.errors import DataError

    err.rule(f"[bold]{title}", align="left")
    t0 = time.perf_counter()
    try:
        app(args=[str(a) for a in args], standalone_mode=False)
    except DataError as e:
        err.print(f"[yellow]note[/yellow]: {e}", highlight=False)
    seconds = time.perf_counter() - t0
    err.print(f"[dim]{seconds:.1f} s[/dim]")
    return seconds
