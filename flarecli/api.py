"""flare's public Python API: recipes and the generic pipeline runner.

Everything here is plain, typed and silent: it prints nothing and raises
:class:`flarecli.core.errors.FlareError` subclasses (with an ``exit_code`` and a ``hint``).

    from flarecli.api import PipelineRun, load_recipe, run_pipeline

    recipe = load_recipe("stmt", preset="cpu")                 # or a recipe file
    result = run_pipeline(PipelineRun(recipe, dataset=Path("data"), out=Path("run")))
    print(result.final)                                        # the model folder to infer with
"""

from __future__ import annotations

from flarecli.core.pipeline.runner import (
    PipelineProgress,
    PipelineResult,
    PipelineRun,
    StepReport,
    run_pipeline,
)
from flarecli.core.recipes.load import builtin_names, load_recipe, recipe_to_json
from flarecli.core.recipes.spec import Recipe

__all__ = [
    "PipelineProgress",
    "PipelineResult",
    "PipelineRun",
    "Recipe",
    "StepReport",
    "builtin_names",
    "load_recipe",
    "recipe_to_json",
    "run_pipeline",
]
