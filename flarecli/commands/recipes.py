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

    from flarecli.core.pipeline.demo import DEMO_PRESET
    from flarecli.core.recipes.load import builtin_names, list_presets, read_raw

    # two columns, the presets under the name: three made the description 20 characters
    # wide in an 80-column terminal
    t = Table(title="built-in recipes")
    t.add_column("recipe, presets", no_wrap=True)
    t.add_column("what it is")
    for name in builtin_names():
        raw, _ = read_raw(name)
        t.add_row(f"[bold]{name}[/bold]\n" + preset_line(list(list_presets(name)),
                                                         raw.get("default_preset")),
                  str(raw.get("title", "")))
    out.print(t)
    out.print(f"flare train runs a recipe's default preset, flare demo {DEMO_PRESET}."
              "\nflare recipes show NAME [--preset P] prints one, "
              "every value resolved.", highlight=False)


def preset_line(presets: list[str], default: str | None) -> str:
    """The presets, each command's default marked: ``paper (train), cpu (demo), smoke``."""
    from flarecli.core.pipeline.demo import DEMO_PRESET

    def mark(p: str) -> str:
        users = [who for who, d in (("train", default), ("demo", DEMO_PRESET)) if p == d]
        return f"{p} ({', '.join(users)})" if users else p

    return ", ".join(mark(p) for p in presets)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="A built-in recipe or a recipe file."),
    preset: str | None = PRESET,
    overrides: list[str] = SET,
) -> None:
    """Print a recipe with a preset applied and every default filled in (JSON)."""
    from rich.highlighter import JSONHighlighter

    from flarecli.core.recipes.load import load_recipe, recipe_to_json

    recipe = load_recipe(name, preset, overrides)
    text = compact_json(recipe_to_json(recipe), out.width)
    out.print(JSONHighlighter()(text), soft_wrap=True)


def compact_json(data, width: int = 80, indent: int = 2) -> str:
    """JSON indented like ``json.dumps(indent=2)``, but a list or object of plain values that
    fits within ``width`` on its line stays on it: a class list or a patch size is one line,
    not fourteen (stmt was 622 lines at 80 columns, every list item on its own)."""
    import json

    def plain(v) -> bool:
        return not isinstance(v, (dict, list)) or not v

    def dump(v, depth: int, prefix: int) -> str:
        one = json.dumps(v)
        if plain(v) or (all(plain(x) for x in (v.values() if isinstance(v, dict) else v))
                        and prefix + len(one) + 1 <= width):
            return one
        pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
        if isinstance(v, dict):
            items = [f"{inner}{json.dumps(k)}: "
                     + dump(x, depth + 1, len(inner) + len(json.dumps(k)) + 2)
                     for k, x in v.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        items = [inner + dump(x, depth + 1, len(inner)) for x in v]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"

    return dump(data, 0, 0)
