"""``flare demo``: the whole StMt loop on a fresh synthetic dataset, step by step."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flarecli.commands._ui import err, out

#: Settings per preset: the synthetic dataset, the network input sizes and the options of each
#: training run (``coarse``: the teacher's abdomen model, ``student_coarse`` the student's
#: (default: as ``coarse``); ``teacher``: the FL-only organ model; ``student``: the student's
#: organ model; ``tumor``: the mean-teacher tumor model). With ``warm`` the student starts from
#: the teacher's weights (same network preset) and the tumor model from the student's organ
#: model. The paper preset trains every model from scratch, as StMt does.
#:
#: CPU choices, measured on the synthetic data (organ DSC on the test split, true ROI):
#: - a 32^3 input learns 2.8x faster per second than 48^3 (val Dice 0.36 vs 0.19 after 200
#:   steps), and 32x32x48 (z, y, x) keeps 0.95 of the organ Dice through the resampling
#:   round trip (0.98 at 48^3);
#: - no augmentation: it slows learning at this budget (0.12 vs 0.19 at 200 steps on 36
#:   cases; the teacher on 4 cases, 600 steps: 0.64 with it, 0.68 without). So the models
#:   have no mirror views and the pseudo-labels are made without TTA;
#: - ``--balanced-ce`` for the organs (mean val Dice 0.46 -> 0.63 at 300 steps), not for the
#:   tumor: there it over-weights a class of a few hundred voxels and the model paints
#:   thousands of voxels of tumor into the organs. Without it, 200 tumor steps cost the
#:   organs 0.004 through the overlay (400 steps: 0.017); tumors are not learned either way;
#: - the teacher saturates on its 4 cases (0.68 after 600 steps, 0.69 after 1,200), so the
#:   spare steps go to the student, who sees 50 (0.70 after 500 more steps);
#: - the student's coarse model is a short fine-tune of the teacher's: retrained for 400
#:   steps it kept 98.2 % of the organ voxels inside the ROI, against 98.7 % for the teacher's.
#: Other ways to spend the same CPU time measured no better (40 fully labelled cases, 600
#: steps, 0.713): base 16 channels 0.719, coordinate input channels 0.70, batch 1 (slower
#: per sample on this CPU). With perfect labels on all 40 cases, 1,200 steps reach 0.751.
_SMOKE_OPT = ["--model", "tiny", "--epochs", "1", "--iterations", "2", "--optimizer", "adamw",
              "--lr", "3e-3"]


def _cpu(epochs: int, *extra: str) -> list[str]:
    """A CPU-preset training run: ``epochs`` x 20 steps of the small network."""
    return ["--model", "small", "--epochs", str(epochs), "--iterations", "20", "--lr", "1e-2",
            "--optimizer", "adamw", "--deep-supervision", "--no-augment", *extra]


_ALL_TRAIN = ("--val-fraction", "0")  # no hold-out where every case is needed for training
PRESETS: dict[str, dict] = {
    # seconds: a check that every step runs (the test suite's smoke test)
    "smoke": dict(train=8, unlabeled=2, test=2, synth_size=48, tta=False, warm=True,
                  coarse_size="16", fine_size="16",
                  coarse=_SMOKE_OPT, teacher=_SMOKE_OPT, student=_SMOKE_OPT,
                  tumor=_SMOKE_OPT),
    # the 2-core CPU: 554 s, mean organ DSC 0.67 (NSD 0.63), tumor DSC 0.04 (measured)
    "cpu": dict(train=40, unlabeled=10, test=6, synth_size=96, tta=False, warm=True,
                coarse_size="32", fine_size="32,32,48",
                coarse=_cpu(20, *_ALL_TRAIN, "--balanced-ce"),
                student_coarse=_cpu(5, *_ALL_TRAIN, "--balanced-ce"),
                teacher=_cpu(30, *_ALL_TRAIN, "--balanced-ce"),
                student=_cpu(25, *_ALL_TRAIN, "--balanced-ce"),
                tumor=_cpu(10)),
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
    student_coarse = ["--size", p["coarse_size"], *p.get("student_coarse", p["coarse"]), *common]
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
          "coarse", *warm("coarse"), *student_coarse]),
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
