"""The phases of a run: one for most methods, one per step of staged training, each with its
training and validation cases, trained parameters, heads and schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flarecli.core.curation.subsets import SourceCase, select
from flarecli.core.errors import InputError
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import plain_classes
from flarecli.core.recipes.load import BUILTIN_SUBSETS
from flarecli.core.training import data as D


@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed data, trained parameters, heads and schedule."""

    name: str
    cases: tuple[str, ...]  # training case ids
    val_cases: tuple[str, ...]
    heads: tuple[str, ...]
    train: tuple[str, ...]  # parameter-name prefixes trained ('all')
    lr: float
    epochs: int
    iterations: int


def _named_subsets(recipe: S.Recipe) -> dict[str, Any]:
    return {**BUILTIN_SUBSETS, **recipe.subsets}


def _validation_candidates(cases: list[SourceCase], stage: S.Stage, heads) -> set[str]:
    """Cases whose labels are complete for the trained heads: kind FL (complete by
    definition), or annotating every class the heads predict one by one (a tumor-annotated
    case for a tumor head). A phase without any trains on pseudo-labels only (seed 002's
    first two steps): its corrected and pseudo-labelled cases are the reference then."""
    need: set[int] = set()
    for h in heads:
        need |= plain_classes(stage.network.heads[h])
    complete = {c.id for c in cases if c.kind == "FL" or (need and need <= set(c.annotated))}
    if complete:
        return complete
    # a phase on pseudo-labels only (seed 002's first steps): they are its reference
    return {c.id for c in cases if c.kind in ("PL", "CPL")}


def plan_phases(cases: list[SourceCase], stage: S.Stage, subset, recipe: S.Recipe,
                seed: int) -> list[Phase]:
    """The phases of a run and the cases of each (training and validation)."""
    named = _named_subsets(recipe)
    steps = stage.method.steps if isinstance(stage.method, S.Staged) else [None]
    phases = []
    for step in steps:
        chosen = select(cases, step.data if step is not None else subset, named)
        name = step.name if step is not None else "train"
        if not chosen:
            raise InputError(f"no cases to train stage phase '{name}' on",
                             hint="check the data subset, or run flare pseudolabel + correct "
                             "first for partial labels")
        heads = (step.heads if step is not None and step.heads else None) or stage.trained_heads
        ids = [c.id for c in chosen]
        train_ids, val_ids = D.split_validation(
            ids, _validation_candidates(chosen, stage, heads), stage.val_fraction, seed)
        if not train_ids:
            raise InputError(f"phase '{name}': no training cases left after the validation "
                             "split", hint="lower val_fraction")
        phases.append(Phase(
            name, tuple(train_ids), tuple(val_ids), tuple(heads),
            tuple(step.train) if step is not None else ("all",),
            (step.lr if step is not None and step.lr else stage.optimizer.lr),
            (step.epochs if step is not None and step.epochs else stage.epochs),
            (step.iterations if step is not None and step.iterations else stage.iterations)))
    return phases


def without_cases(phases: list[Phase], bad: set[str]) -> list[Phase]:
    return [Phase(p.name, tuple(i for i in p.cases if i not in bad),
                  tuple(i for i in p.val_cases if i not in bad), p.heads, p.train, p.lr,
                  p.epochs, p.iterations) for p in phases]
