"""Shared test helpers: run the CLI in-process, write tiny NIfTI cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flarecli.core.io.nifti import Geometry, write_volume

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
