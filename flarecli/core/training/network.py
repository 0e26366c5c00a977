"""The network a stage trains: built from its recipe, warm-started from a bundle, and which of
its parameters a phase trains."""

from __future__ import annotations

import json
from pathlib import Path

from flarecli.core.errors import ModelError
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.typed import RecipeError, to_json


def build_network(stage: S.Stage):
    """The stage's network (CPU) and its architecture record; raises RecipeError for bad
    arguments or an input size the network cannot take."""
    from flarecli.models.build import build_model, initialise

    heads = {h: len(c) + 1 for h, c in stage.network.heads.items()}
    args = {**stage.network.args, "in_channels": 1, "heads": heads}
    try:
        model = build_model(stage.network.arch, **args)
    except ValueError as e:
        raise RecipeError("network", str(e)) from None
    initialise(model, stage.network.init)
    size = tuple(stage.geometry.input_zyx)
    dims = getattr(model, "dims", 3)
    if dims == 2:
        if size[0] != 1:
            raise RecipeError("geometry", f"a 2-D network takes slices: the input must be "
                              f"1 x H x W, got {list(size)}")
        size = size[1:]
    divisor = model.divisor()
    if any(s % d for s, d in zip(size, divisor, strict=True)):
        raise RecipeError("geometry", f"input {list(stage.geometry.input_zyx)}: each size must "
                          f"be a multiple of {list(divisor)} for this network")
    return model, {"name": stage.network.arch, "args": args}


def trainable_mask(module, prefixes: tuple[str, ...]) -> dict[str, bool]:
    """Which parameters a phase trains. Raises RecipeError for a prefix naming none."""
    names = [n for n, _ in module.named_parameters()]
    if "all" in prefixes:
        return dict.fromkeys(names, True)
    for p in prefixes:
        if not any(n == p or n.startswith(p + ".") for n in names):
            groups = sorted({n.split(".")[0] for n in names} | {
                ".".join(n.split(".")[:2]) for n in names if n.startswith("branches.")})
            raise RecipeError("train", f"'{p}' names no parameter of the network",
                              hint="parameter groups: " + ", ".join(groups))
    return {n: any(n == p or n.startswith(p + ".") for p in prefixes) for n in names}


def _is_head_tensor(key: str) -> bool:
    return key.startswith("heads.") or ".outputs." in key


def warm_start(module, bundle_dir: Path) -> None:
    """Initialise from a bundle's weights: a student from its teacher, a tumor model from an
    organ model. Output convolutions are taken only when their shapes fit (same classes);
    every other tensor must fit, else ModelError."""
    from flarecli.core.io.bundle import load_bundle

    source, _ = load_bundle(bundle_dir)
    own, theirs = module.state_dict(), source.state_dict()
    misfits = sorted(k for k in set(own) | set(theirs) if not _is_head_tensor(k) and (
        k not in own or k not in theirs or own[k].shape != theirs[k].shape))
    if misfits:
        raise ModelError(f"{bundle_dir}: the init bundle does not fit this network "
                         f"({len(misfits)} tensors differ, e.g. {misfits[0]})",
                         hint="start from a bundle of the same network")
    module.load_state_dict({**own, **{k: v for k, v in theirs.items()
                                      if k in own and own[k].shape == v.shape}})


def seen_by_init(bundle_dir: Path, val_ids: tuple[str, ...], stage: S.Stage) -> str | None:
    """A note when validation cases of this run trained the ``init`` bundle on the same heads
    (a student's hold-out the teacher learned from): their Dice then rewards staying close to
    the teacher, and best-weight selection with it."""
    config = bundle_dir / "config.json"
    if not config.is_file() or not val_ids:
        return None
    try:
        meta = json.loads(config.read_text())
        if meta["stage"]["network"]["heads"] != to_json(stage.network.heads):
            return None
        seen = {c for p in meta["phases"] for c in p["cases"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    both = sorted(c for c in val_ids if c in seen)
    if not both:
        return None
    return (f"{len(both)} of {len(val_ids)} validation cases ({', '.join(both[:3])}"
            f"{', ...' if len(both) > 3 else ''}) trained the init bundle: validation Dice "
            "favours the initial weights; use the same val_fraction and seed for both runs, "
            "or val_fraction 0 and the final weights")


def channels_last(module, device) -> bool:
    """Whether a 3-D network trains with channels-last tensors: on the CPU, where oneDNN's
    convolution backward for the few channels of small networks is much faster so (the demo's
    organ model: a training step 0.319 -> 0.256 s with AVX-512, 0.472 -> 0.376 s limited to
    AVX2). Results are the same up to rounding."""
    return device.type == "cpu" and getattr(module, "dims", 3) == 3
