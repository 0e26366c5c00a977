"""What a finished run leaves: the bundle (weights, ``model.json``), and the model folder's
``recipe.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError
from flarecli.core.io.files import write_text_atomic
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.load import recipe_to_json
from flarecli.core.recipes.typed import to_json
from flarecli.core.training.options import TrainRun
from flarecli.core.training.prepare import Prepared
from flarecli.core.training.state import RunState


def export_bundle(state: RunState, run: TrainRun, stage: S.Stage, arch: dict[str, Any],
                  data: Prepared) -> str:
    """Write the bundle: the final (and best) weights of the exported network, model.json.
    Returns the final weights' SHA-256."""
    from flarecli.core.io.bundle import save_weights, sha256, write_bundle

    run_dir = state.run_dir
    checksums = {"final": save_weights(run_dir, "final", state.exported.state_dict())}
    best_file = run_dir / "weights_best.pt"
    if best_file.exists():
        checksums["best"] = sha256(best_file)
    phases, intensity = data.phases, data.intensity
    last = phases[-1]
    kinds = [data.cases[i].kind for i in last.cases]
    write_bundle(run_dir, {
        "recipe": run.recipe.name, "preset": run.recipe.preset, "stage_name": run.stage,
        "stage": to_json(stage), "architecture": arch, "intensity": intensity.to_json(),
        "fingerprint": {"cases": len({i for p in phases for i in p.cases}),
                        "kinds": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
                        "intensity": intensity.to_json()},
        "training": run.options(),
        "default_weights": "best" if last.val_cases else "final",
        "exported": "ema_teacher" if state.exported is state.teacher else "model",
    }, checksums)
    return checksums["final"]


def write_model_recipe(model_dir: Path, recipe: S.Recipe) -> None:
    """``MODEL/recipe.json``: the resolved recipe whose graphs ``flare infer`` runs. A model
    folder holds the stages of one recipe. An identical file is left as it is."""
    path = model_dir / "recipe.json"
    text = json.dumps(recipe_to_json(recipe), indent=2) + "\n"
    if path.is_file():
        try:
            old = path.read_text()
            other = json.loads(old).get("name")
        except (OSError, ValueError, AttributeError):
            old, other = None, None
        if other is not None and other != recipe.name:
            raise InputError(f"{model_dir}: holds stages of recipe '{other}', not "
                             f"'{recipe.name}'", hint="train into another model folder")
        if old == text:
            return
    write_text_atomic(path, text)
