"""Shared test helpers: run the CLI in-process, write tiny NIfTI cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.io.geometry import Geometry
from flarecli.core.io.nifti import write_volume

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-example"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run ``flare ARGS`` through the real ``main()`` (exit-code mapping included)."""
    from flarecli.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0) if not isinstance(e.code, str) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def geom(shape_zyx=(8, 10, 12), spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
         direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Geometry:
    return Geometry(tuple(shape_zyx), tuple(map(float, spacing_xyz)), tuple(map(float, origin)),
                    tuple(map(float, direction)))


def write_case(root: Path, case_id: str, label: np.ndarray | None, g: Geometry | None = None,
               image: np.ndarray | None = None, images="imagesTr", labels="labelsTr") -> None:
    """Write ``<case>_0000`` (CT-like int16) and optionally ``<case>`` label into root."""
    g = g or geom(label.shape if label is not None else (8, 10, 12))
    if image is None:
        rng = np.random.default_rng(0)
        image = rng.integers(-1000, 1000, size=g.shape_zyx).astype(np.int16)
    write_volume(root / images / f"{case_id}_0000.nii.gz", image, g)
    if label is not None:
        write_volume(root / labels / f"{case_id}.nii.gz", label, g)


@pytest.fixture
def shared_ct() -> tuple[Path, Path]:
    image = SHARED_DATA / "ts_example_0000.nii.gz"
    label = SHARED_DATA / "ts_example.nii.gz"
    if not (image.is_file() and label.is_file()):
        pytest.skip("real CT example (../shared/data) not present")
    return image, label


def blob_case(root, case_id, seed, tumor=False, images="imagesTr", labels="labelsTr",
              label_ids=(1, 3, 13)):
    """A 24x32x32 'CT' with three organs (ids 1, 3, 13) of distinct HU, optionally a tumor."""
    rng = np.random.default_rng(seed)
    shape = (24, 32, 32)
    zz, yy, xx = np.mgrid[:24, :32, :32]
    label = np.zeros(shape, np.uint8)
    image = rng.normal(-80, 15, shape)
    for lab, hu, c in zip(label_ids, (100, 200, 40), ((12, 10, 10), (12, 22, 22), (8, 22, 9)),
                          strict=True):
        c = np.array(c) + rng.integers(-1, 2, 3)
        m = ((zz - c[0]) / 6) ** 2 + ((yy - c[1]) / 6) ** 2 + ((xx - c[2]) / 5) ** 2 <= 1
        label[m] = lab
        image[m] = rng.normal(hu, 15, m.sum())
    if tumor:
        m = (zz - 12) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 6
        label[m] = 14
        image[m] = rng.normal(-10, 10, m.sum())
    write_case(root, case_id, label, geom(shape, spacing_xyz=(1.5, 1.5, 2.0)),
               image=image.astype(np.int16), images=images, labels=labels)


TINY_ARGS = {"base_channels": 4, "n_down": 2, "blocks_down": 1, "blocks_up": 1}
STMT_STAGES = ("coarse", "organs", "teacher", "tumor")


def tiny_recipe(recipe: str = "stmt", stages=STMT_STAGES, extra=None, **fields):
    """A built-in recipe with every stage made tiny and short: a 4-channel network at 16^3,
    2 epochs of 4 steps, batch 2, no augmentation, no hold-out, AdamW 3e-3. ``fields`` set
    more stage fields (dotted, relative to each stage: ``geometry__jitter=0`` for
    ``geometry.jitter``); ``extra`` holds more dotted keys from the recipe's root."""
    from flarecli.core.recipes.load import load_recipe

    sets = {}
    for s in stages:
        base = {"network.args": TINY_ARGS, "geometry.size_zyx": [16, 16, 16], "epochs": 2,
                "iterations": 4, "batch_size": 2, "val_fraction": 0.0, "augmentation": None,
                "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 3e-5,
                              "schedule": "poly", "warmup_epochs": 0}}
        base.update({k.replace("__", "."): v for k, v in fields.items()})
        sets.update({f"stages.{s}.{k}": v for k, v in base.items()})
    return load_recipe(recipe, "paper", {**sets, **(extra or {})})


def train_run(src, out, stage="organs", recipe=None, **kw):
    """A TrainRun of a tiny recipe on the CPU."""
    from flarecli.core.training.options import TrainRun

    kw.setdefault("device", "cpu")
    kw.setdefault("workers", 0)
    return TrainRun(recipe or tiny_recipe(), stage, str(src), str(out), **kw)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Compiled OpenVINO models go to a cache of the test session, never the user's."""
    import os

    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """ROOT with ROOT/data (two blob cases with tumors) and ROOT/model: a tiny stmt model
    (coarse, organs, tumor; one epoch of two steps), shared by the tests that only need some
    trained model to run."""
    from flarecli.core.training.run import train

    root = tmp_path_factory.mktemp("tiny-model")
    for i in range(2):
        blob_case(root / "data", f"b{i}", i, tumor=True)
    for stage in ("coarse", "organs", "tumor"):
        train(train_run(root / "data", root / "model", stage=stage,
                        recipe=tiny_recipe(epochs=1, iterations=2)))
    return root


def save_model_json(path, meta) -> None:
    """Write an edited ``model.json`` as flare would have written it: each weights entry's
    ``bytes`` matching its file, and ``record_sha256`` recomputed -- for tests that build a
    consistent bundle on purpose (a retrained stage, a field under test)."""
    import json

    from flarecli.core.io.bundle import sealed

    weights = meta.get("weights")
    for entry in weights.values() if isinstance(weights, dict) else ():
        file = Path(path).parent / str(entry.get("file")) if isinstance(entry, dict) else None
        if file is not None and "bytes" in entry and file.is_file():
            entry["bytes"] = file.stat().st_size
    Path(path).write_text(json.dumps(sealed(meta)))


@pytest.fixture
def columns80(monkeypatch):
    """The commands' consoles as in an 80-column terminal (what COLUMNS=80 sets when the
    consoles are made)."""
    from flarecli.commands import _ui

    for console in (_ui.out, _ui.err):
        monkeypatch.setattr(console, "_width", 80)
