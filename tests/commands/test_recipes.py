"""``flare recipes`` in an 80-column terminal, and its presets agreeing with ``flare demo``."""

import inspect
import json

from flarecli.commands.recipes import compact_json, preset_line


def test_the_list_keeps_descriptions_readable_at_80_columns(run_cli, columns80):
    res = run_cli("recipes")
    assert res.code == 0
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    assert all(len(line) <= 80 for line in res.stdout.splitlines())
    # the description column: wide enough for whole phrases (it was 20 characters)
    widths = [len(line.split("│")[2]) for line in rows]
    assert min(widths) >= 40
    assert "paper (train), cpu (demo), smoke" in res.stdout


def test_demo_runs_the_preset_the_list_marks_as_its_own():
    from flarecli.commands.demo import demo
    from flarecli.core.pipeline.demo import DEMO_PRESET

    default = inspect.signature(demo).parameters["preset"].default.default
    assert default == DEMO_PRESET
    assert preset_line(["paper", "cpu", "smoke"], "paper") == "paper (train), cpu (demo), smoke"
    assert preset_line(["cpu", "x"], "cpu") == "cpu (train, demo), x"


def test_show_puts_short_lists_on_one_line(run_cli, columns80):
    res = run_cli("recipes", "show", "stmt")
    assert res.code == 0
    shown = json.loads(res.stdout)  # still JSON
    assert shown["name"] == "stmt"
    lines = res.stdout.splitlines()
    one_per_item = json.dumps(shown, indent=2).splitlines()
    assert len(lines) < 0.8 * len(one_per_item)  # 622 against 431 when this was written
    assert '"size_zyx": [128, 128, 128],' in [line.strip() for line in lines]


def test_compact_json_round_trips_and_respects_the_width():
    data = {"a": [1, 2, 3], "b": {"c": list(range(40)), "d": None}, "e": [], "f": [[1, 2]]}
    text = compact_json(data, width=40)
    assert json.loads(text) == data
    assert '  "a": [1, 2, 3],' in text.splitlines()
    assert all(len(line) <= 40 for line in text.splitlines() if '"c"' not in line)
    assert '"c": [0, 1' not in text  # too long for one line: one item a line
