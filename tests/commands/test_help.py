"""Every command's --help: the docstring's paragraphs reflow to the terminal width."""

import inspect

import pytest

from flarecli.cli import app


@pytest.mark.parametrize("name", [c.name for c in app.registered_commands])
def test_help_keeps_paragraphs_but_not_source_line_breaks(name, run_cli):
    command = next(c for c in app.registered_commands if c.name == name)
    source = inspect.cleandoc(command.callback.__doc__).split("\n\n")
    # Typer's rich help prints every newline it is given: the registered help must hold the
    # docstring's paragraphs, each on one line, and the same words
    assert command.help.split("\n\n") == [" ".join(p.split()) for p in source]
    res = run_cli(name, "--help")
    assert res.code == 0
    rendered = " ".join(" ".join(line.strip(" │") for line in res.stdout.splitlines()).split())
    assert " ".join(source[0].split()) in rendered


def test_a_long_paragraph_wraps_at_the_terminal_not_at_the_source(run_cli):
    lines = run_cli("pseudolabel", "--help").stdout.splitlines()
    # the docstring breaks after "foreground)"; at 80 columns the rendered line goes on
    assert any("foreground) times" in line for line in lines)
