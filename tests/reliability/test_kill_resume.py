"""kill -9 in the middle of a run, then the same command again: it resumes, and the outputs
are exactly those of an uninterrupted run (infer, pseudolabel, correct, train)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.io.nifti import read_volume, write_volume
from flarecli.core.io.outputs import WRITTEN, written_here
from tests.conftest import blob_case, geom
from tests.core.inference.test_engine import model_dir  # noqa: F401 (a fixture)

FLARE = [sys.executable, "-m", "flarecli"]


def run_killed(args: list, ready, timeout: float = 120.0) -> None:
    """Start ``flare ARGS``, SIGKILL it as soon as ``ready()`` holds (or it ends first)."""
    proc = subprocess.Popen([*FLARE, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()


def run(args: list) -> None:
    subprocess.run([*FLARE, *map(str, args)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def volumes(folder: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(folder.glob("*.nii.gz")):
        array, g = read_volume(p)
        out[p.name] = (array.tobytes(), g)
    return out


def scans(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_volume(folder / f"s{i:02d}_0000.nii.gz",
                     rng.normal(0, 200, (20, 30, 28)).astype(np.int16),
                     geom((20, 30, 28), spacing_xyz=(1.5, 1.5, 2.0)))


def test_infer_and_pseudolabel_resume_exactly(model_dir, tmp_path):  # noqa: F811
    scans(tmp_path / "in", 12)
    for command in ("infer", "pseudolabel"):
        ref, cut = tmp_path / f"{command}-ref", tmp_path / f"{command}-cut"
        args = [command, tmp_path / "in", None, "--model", model_dir, "--device", "cpu"]
        run([a if a is not None else ref for a in args])
        run_killed([a if a is not None else cut for a in args],
                   lambda cut=cut: len(list(cut.glob("*.nii.gz"))) >= 3)
        done = len(list(cut.glob("*.nii.gz")))
        assert 0 < done < 12
        run([a if a is not None else cut for a in args])
        assert volumes(cut) == volumes(ref)
        assert not [p for p in cut.iterdir() if p.name.startswith(".") and p.name != WRITTEN]
        # the ledger names every output as the command's: the killed run's and the rest
        assert written_here(cut, command) == {p.name for p in cut.glob("*.nii.gz")}
    # a killed run wrote no record: the pseudo-labels it finished are computed again, for
    # their quality scores (which --min-score selects by) were lost with it
    ref, cut = tmp_path / "pseudolabel-ref", tmp_path / "pseudolabel-cut"
    assert (cut / "scores.csv").read_text() == (ref / "scores.csv").read_text()


def test_pseudolabel_interrupted_by_ctrl_c_keeps_its_scores(model_dir, tmp_path):  # noqa: F811
    """Ctrl-C writes the run record of the scans finished so far, so that the resumed run
    keeps their outputs and their quality scores: scores.csv as an uninterrupted run's."""
    scans(tmp_path / "in", 12)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run(["pseudolabel", tmp_path / "in", ref, "--model", model_dir, "--device", "cpu"])
    proc = subprocess.Popen([*FLARE, "pseudolabel", str(tmp_path / "in"), str(cut), "--model",
                             str(model_dir), "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    end = time.monotonic() + 120
    while time.monotonic() < end and len(list(cut.glob("*.nii.gz"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    record = json.loads((cut / "pseudolabel.json").read_text())
    finished = {s["case"] for s in record["scans"]}
    assert 2 <= len(finished) < 12 and all(s["score"] is not None for s in record["scans"])
    res = subprocess.run([*FLARE, "pseudolabel", str(tmp_path / "in"), str(cut), "--model",
                          str(model_dir), "--device", "cpu"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"pseudo-labelled {12 - len(finished)} scans" in res.stdout  # the rest were kept
    assert (cut / "scores.csv").read_text() == (ref / "scores.csv").read_text()
    assert volumes(cut) == volumes(ref)


def test_correct_resumes_exactly(tmp_path):
    rng = np.random.default_rng(1)
    g = geom((16, 40, 40))
    for i in range(30):
        pseudo = rng.integers(0, 14, g.shape_zyx).astype(np.uint8)
        partial = np.where(pseudo == 1, 1, 0).astype(np.uint8)
        write_volume(tmp_path / "pseudo" / f"c{i:02d}.nii.gz", pseudo, g)
        write_volume(tmp_path / "labels" / f"c{i:02d}.nii.gz", partial, g)
        write_volume(tmp_path / "img" / f"c{i:02d}_0000.nii.gz", np.zeros(g.shape_zyx, np.int16),
                     g)
    base = ["correct", tmp_path / "pseudo", tmp_path / "labels"]
    run([*base, tmp_path / "ref", "--images", tmp_path / "img"])
    cut = tmp_path / "cut"
    run_killed([*base, cut, "--images", tmp_path / "img"],
               lambda: len(list(cut.glob("*.nii.gz"))) >= 5)
    assert len(list(cut.glob("*.nii.gz"))) < 30
    run([*base, cut, "--images", tmp_path / "img"])
    assert volumes(cut) == volumes(tmp_path / "ref")
    ref = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    again = json.loads((cut / "manifest.json").read_text())
    assert [(c["id"], c["kind"]) for c in again["cases"]] == [(c["id"], c["kind"])
                                                             for c in ref["cases"]]


def test_train_resumes_exactly_after_kill_9(tmp_path):
    for i in range(3):
        blob_case(tmp_path / "data", f"b{i}", i)
    common = ["train", tmp_path / "data", "--stage", "organs", "--preset", "smoke", "--device",
              "cpu", "--epochs", "6", "--iterations", "4", "--set",
              'stages.organs.augmentation={"mirror": ["SI", "AP"]}']
    run([*common, "--out", tmp_path / "ref"])
    metrics = tmp_path / "cut" / "organs" / "metrics.jsonl"
    run_killed([*common, "--out", tmp_path / "cut"],
               lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
    assert not (tmp_path / "cut" / "organs" / "weights_final.pt").exists()
    resume = ["train", tmp_path / "data", "--out", tmp_path / "cut", "--stage", "organs",
              "--resume"]
    blob_case(tmp_path / "data", "b3", 3)  # a case added meanwhile would join the run
    added = subprocess.run([*FLARE, *map(str, resume)], capture_output=True, text=True)
    assert added.returncode == 3 and "Traceback" not in added.stderr, added.stderr
    assert "no longer gives the cases this run trained on" in added.stderr
    assert "1 not in the run (b3)" in added.stderr
    for p in (tmp_path / "data").rglob("b3*"):
        p.unlink()
    run(resume)
    ref = json.loads((tmp_path / "ref" / "organs" / "model.json").read_text())
    cut = json.loads((tmp_path / "cut" / "organs" / "model.json").read_text())
    assert cut["weights"]["final"]["sha256"] == ref["weights"]["final"]["sha256"]
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 6


def test_ctrl_c_is_one_line_and_exit_130_and_the_run_resumes(tmp_path):
    # enough cases that the run is still going when the signal comes, even on a loaded machine
    args = ["synth", tmp_path / "d", "--train", "60", "--unlabeled", "0", "--test", "0"]
    # a shell that starts the suite in the background ignores SIGINT in what it starts, and
    # a child inherits that (as POSIX wants): give the run Ctrl-C's default, as a terminal does
    proc = subprocess.Popen([*FLARE, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    end = time.monotonic() + 60
    while time.monotonic() < end and len(list((tmp_path / "d").rglob("*.nii.gz"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[0] == "flare: interrupted"
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert not [p for p in (tmp_path / "d").rglob(".*") if p.is_file()]  # no partial file
    run(args)  # resumes to the full dataset
    assert len(list((tmp_path / "d" / "imagesTr").glob("*.nii.gz"))) == 60


def test_ctrl_c_tells_how_each_command_goes_on():
    """Every command resumes when run again as it was, except train, which a second run
    refuses until --resume (a training run is already there): its hint says so."""
    from flarecli.cli import _interruptible
    from flarecli.core.errors import Interrupted

    def cut():
        raise KeyboardInterrupt

    for name, words in (("train", "the same command with --resume"),
                        ("infer", "run the same command again")):
        with pytest.raises(Interrupted) as caught:
            _interruptible(cut, name)()
        assert caught.value.exit_code == 130 and words in caught.value.hint


def test_a_second_training_of_the_same_stage_is_refused_while_the_first_runs(tmp_path):
    """Two trainings of one stage into one model folder (the second with --overwrite) both
    ran to the end, their epochs interleaved in one metrics.jsonl."""
    for i in range(3):
        blob_case(tmp_path / "d", f"c{i}", i)
    args = [*FLARE, "train", str(tmp_path / "d"), "--out", str(tmp_path / "m"), "--stage",
            "organs", "--preset", "smoke", "--device", "cpu", "--epochs", "50"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not (tmp_path / "m" / "organs" / "config.json").exists():
            time.sleep(0.05)
        second = subprocess.run([*args, "--overwrite"], capture_output=True, text=True)
        assert second.returncode == 3 and "in use by PID" in second.stderr, second.stderr
    finally:
        first.kill()
        first.wait()
    # the lock of a killed run is stale: the next run takes it over
    again = subprocess.run([*args[:-2], "--epochs", "1", "--overwrite"], capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr


def test_an_old_run_that_cannot_be_deleted_is_refused_before_any_work(tmp_path, run_cli,
                                                                       monkeypatch):
    """--overwrite over a run folder holding a folder this user may not change (a shared
    project folder): exit 3 at once, naming it, and the old run left whole. (Root may
    change any folder, so the refusal is simulated.)"""
    for i in range(2):
        blob_case(tmp_path / "data", f"b{i}", i)
    locked = tmp_path / "m" / "organs" / "plots"
    locked.mkdir(parents=True)
    (locked / "old.png").write_bytes(b"old")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and
                        real(p, mode, **kw))
    res = run_cli("train", tmp_path / "data", "--out", tmp_path / "m", "--stage", "organs",
                  "--preset", "smoke", "--device", "cpu", "--epochs", "1", "--overwrite")
    assert res.code == 3 and "Traceback" not in res.stderr
    assert f"cannot be replaced ({locked}: permission denied)" in res.stderr, res.stderr
    assert "intensity statistics" not in res.stdout + res.stderr  # before the preprocessing
    assert (locked / "old.png").read_bytes() == b"old"
