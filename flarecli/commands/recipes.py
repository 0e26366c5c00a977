"""``flare recipes``: the built-in recipes and their presets; ``show`` prints one resolved."""

from __future__ import annotations

import typer

from flarecli.commands._ui import PRESET, SET, out

app = typer.Typer(no_args_is_help=False, add_completion=False)


@app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    """List the built-in recipes (segmentation systems) and their presets."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from flarecli.core.recipes.load import builtin_names, list_presets, read_raw

    t = Table(title="built-in recipes")
    for col in ("recipe", "presets", "what it is"):
        t.add_column(col, no_wrap=col != "what it is")  # names and presets stay whole
    for name in builtin_names():
        raw, _ = read_raw(name)
        presets = list_presets(name)
        default = raw.get("default_preset")
        shown = ", ".join(f"{p} (default)" if p == default else p for p in presets)
        t.add_row(name, shown, str(raw.get("title", "")))
    out.print(t)
    out.print("flare recipes show NAME [--preset P] prints one, every value resolved.",
              highlight=False)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="A built-in recipe or a recipe file."),
    preset: str | None = PRESET,
    overrides: list[str] = SET,
) -> None:
    """Print a recipe with a preset applied and every default filled in (JSON)."""
    import json

    from flarecli.core.recipes.load import load_recipe, recipe_to_json

    recipe = load_recipe(name, preset, overrides)
    out.print_json(json.dumps(recipe_to_json(recipe)))
