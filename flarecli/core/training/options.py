"""What to train (:class:`TrainRun`) and how a caller follows it (:class:`Progress`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import to_json


@dataclass
class TrainRun:
    """What to train: a stage of a resolved recipe, on the ``data`` subset of ``source`` (a
    dataset folder or a manifest), into ``out/<stage>/``. ``init`` warm-starts from a bundle.
    ``overwrite`` replaces an existing run folder; without it (and without resume) an
    existing one is refused."""

    recipe: S.Recipe
    stage: str
    source: str
    out: str
    data: str | S.Subset | None = None
    init: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    cache: str | None = None
    overwrite: bool = False

    def options(self) -> dict[str, Any]:
        return {"source": str(Path(self.source).resolve()), "out": str(Path(self.out).resolve()),
                "data": to_json(self.data), "init": self.init, "seed": self.seed,
                "device": self.device, "workers": self.workers, "cache": self.cache}


@dataclass
class Progress:
    """Callbacks the CLI renders; core never prints."""

    stage: Callable[[str], None] = lambda text: None
    problem: Callable[[str, str], None] = lambda case, message: None
    cache: Callable[[int, int], None] = lambda done, total: None
    step: Callable[[int, int, float], None] = lambda epoch, step, loss: None
    epoch: Callable[[dict[str, Any]], None] = lambda record: None
