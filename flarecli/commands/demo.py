"""``flare demo``: the whole StMt loop on a fresh synthetic dataset, step by step."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flarecli.commands._ui import err, out

#: Settings per preset. ``teacher``/``student``: network preset, steps (epochs x iterations)
#: and optimiser options of each training run. Where teacher and student share a preset
#: (smoke, cpu), the student starts from the teacher's weights (``warm``): on 2 CPU cores
#: every step counts, and the short schedule then goes to the teacher, who sees only the few
#: fully labelled cases. The paper preset trains them separately, as StMt does.
PRESETS: dict[str, dict] = {
    # seconds: a check that every step runs (the test suite's smoke test)
    "smoke": dict(train=8, unlabeled=2, test=2, synth_size=48, teacher="tiny", student="tiny",
                  coarse=16, fine=16, teacher_epochs=1, student_epochs=1, iterations=2,
                  tta=False, warm=True, opt=["--optimizer", "adamw"], teacher_lr=3e-3,
                  student_lr=3e-3),
    # the 2-core CPU: 815 s, mean organ DSC 0.39 on the synthetic test split (measured)
    "cpu": dict(train=40, unlabeled=10, test=6, synth_size=96, teacher="small",
                student="small", coarse=32, fine=48, teacher_epochs=20, student_epochs=5,
                iterations=20, tta=True, warm=True,
                opt=["--optimizer", "adamw", "--deep-supervision"], teacher_lr=1e-2,
                student_lr=3e-3),
    # a GPU, the paper's networks, sizes and schedule
    "paper": dict(train=200, unlabeled=100, test=20, synth_size=256, teacher="teacher",
                  student="student", coarse=128, fine=192, teacher_epochs=500,
                  student_epochs=500, iterations=250, tta=True, warm=False, opt=[],
                  teacher_lr=0.01, student_lr=0.01),
}


def demo(
    out_dir: Path = typer.Argument(Path("demo"), help="Folder for every artefact."),
    preset: str = typer.Option("cpu", "--preset", help="smoke, cpu or paper (GPU)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the StMt loop: synth -> audit -> teacher -> pseudolabel -> correct -> student
    (coarse, organs on FL/CPL/PL, mean-teacher tumor) -> infer -> evaluate."""
    from flarecli.core.errors import DataError, check_choice

    check_choice("preset", preset, tuple(PRESETS))
    p = PRESETS[preset]
    data, run = out_dir / "data", out_dir / "run"
    dev = ["--device", device]
    common = ["--iterations", str(p["iterations"]), "--seed", str(seed), *p["opt"], *dev]
    teach = ["--epochs", str(p["teacher_epochs"]), "--lr", str(p["teacher_lr"]), *common]
    sched = ["--epochs", str(p["student_epochs"]), "--lr", str(p["student_lr"]), *common]
    tta = ["--tta"] if p["tta"] else []

    def warm(name: str) -> list:
        return ["--init", run / "teacher" / name] if p["warm"] else []

    steps = [
        ("1. synthetic dataset", ["synth", data, "--train", p["train"], "--unlabeled",
                                  p["unlabeled"], "--test", p["test"], "--size",
                                  p["synth_size"], "--seed", seed]),
        ("2. audit", ["audit", data, "--json", run / "audit.json"]),
        ("3a. teacher: coarse abdomen model (FL cases)",
         ["train", run / "audit.json", "--out", run / "teacher", "--stage", "coarse",
          "--model", p["teacher"], "--size", p["coarse"], *teach]),
        ("3b. teacher: organ model (FL cases)",
         ["train", run / "audit.json", "--out", run / "teacher", "--stage", "fine",
          "--target", "organs", "--model", p["teacher"], "--size", p["fine"], *teach]),
        ("4a. pseudo-labels of the partially labelled scans",
         ["pseudolabel", data / "imagesTr", run / "pseudo", "--model", run / "teacher",
          *tta, *dev]),
        ("4b. pseudo-labels of the unlabeled scans",
         ["pseudolabel", data / "imagesUn", run / "pseudo", "--model", run / "teacher",
          *tta, *dev]),
        ("5. correction with the partial labels",
         ["correct", run / "pseudo", data / "labelsTr", run / "corrected"]),
        ("6a. student: coarse model",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "coarse", "--model", p["student"], "--size", p["coarse"], *warm("coarse"),
          *sched]),
        ("6b. student: organs on FL / CPL / PL (l1 = 1.0, l2 = 0.5)",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "fine", "--target", "organs", "--model", p["student"], "--size", p["fine"],
          "--l1", "1.0", "--l2", "0.5", *warm("organs"), *sched]),
        ("6c. student: mean-teacher tumor model",
         ["train", run / "corrected" / "manifest.json", "--out", run / "student", "--stage",
          "fine", "--target", "tumor", "--model", p["student"], "--size", p["fine"], *sched]),
        ("7a. inference on the test split",
         ["infer", data / "imagesTs", run / "predictions", "--model", run / "student",
          "--profile", run / "profile.json", *dev]),
        ("7b. evaluation against the truth",
         ["evaluate", run / "predictions", data / "labelsTs", "--csv", run / "scores.csv",
          "--json", run / "scores.json"]),
    ]
    from flarecli.cli import app

    t_start = time.perf_counter()
    for title, args in steps:
        err.rule(f"[bold]{title}", align="left")
        t0 = time.perf_counter()
        try:
            app(args=[str(a) for a in args], standalone_mode=False)
        except DataError as e:  # some cases had problems: reported above, the loop goes on
            err.print(f"[yellow]note[/yellow]: {e}", highlight=False)
        err.print(f"[dim]{time.perf_counter() - t0:.1f} s[/dim]")
    out.print(f"demo finished in {time.perf_counter() - t_start:.0f} s; every artefact is in "
              f"{out_dir} (scores: {run / 'scores.json'})", highlight=False)
