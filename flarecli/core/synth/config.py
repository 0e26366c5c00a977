"""How big a synthetic dataset is: one dataclass for ``flare synth``'s options and for a
recipe's ``demo`` section (the dataset ``flare demo`` makes for it).

The defaults are the recipe section's, 40 training, 10 unlabeled and 6 test cases of 96 x 96:
every built-in recipe's ``cpu`` preset uses them, and a recipe file without a ``demo``
section has always meant them, so they stay; ``flare synth`` passes its own options. The
seed is not part of it: it is the run's (``flare synth --seed``, ``flare demo --seed``), and
two datasets of one size differ by it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from flarecli.core.errors import InputError


@dataclass(frozen=True)
class SynthConfig:
    """Partially labeled training, unlabeled and fully labeled test cases, and the in-plane
    matrix size (``size x size``; the slice count follows from the anatomy)."""

    train: int = 40
    unlabeled: int = 10
    test: int = 6
    size: int = 96

    def validate(self) -> None:
        """InputError, naming the ``flare synth`` option, unless a dataset can be made: no
        count below 0, at least one case, an in-plane size in 32..1024."""
        for name in ("train", "unlabeled", "test"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name} must be >= 0")
        if self.train + self.unlabeled + self.test == 0:
            raise InputError("nothing to generate: all split sizes are 0")
        if not 32 <= self.size <= 1024:
            raise InputError(f"--size {self.size}: choose an in-plane size in 32..1024")
