"""The documentation keeps up with the code: every command and option is in docs/cli.md, and
every relative link of README.md and docs/*.md leads to a file (and heading) that exists."""

import re
from pathlib import Path

import pytest
import typer

from flarecli.cli import app

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _commands(group, path=("flare",)):
    """(words, click command) for every command and sub-group under `group`, depth first."""
    for name, command in sorted(getattr(group, "commands", {}).items()):
        words = (*path, name)
        yield words, command
        yield from _commands(command, words)


COMMANDS = list(_commands(typer.main.get_command(app)))


def _section(text: str, command: str) -> str:
    """docs/cli.md from the first heading naming `command` to the next level-2 heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("#") and f"`{command}`" in line), None)
    assert start is not None, f"docs/cli.md has no heading naming `{command}`"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "\n".join(lines[start:end])


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(line) for line in text.splitlines() if line.startswith("#")}


def test_the_command_list_is_complete():
    names = {" ".join(words) for words, _ in COMMANDS}
    assert {"flare demo", "flare infer", "flare recipes", "flare recipes show"} <= names


@pytest.mark.parametrize("words,command", COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_command_and_option_is_in_cli_md(words, command):
    section = _section(CLI_MD.read_text(), " ".join(words))
    for param in command.params:
        if param.param_type_name != "option":
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            assert f"`{opt}`" in section, f"{' '.join(words)} {opt} is not in docs/cli.md"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    text = page.read_text()
    assert "../shared" not in text, f"{page.name} points outside the repository"
    for target in LINK.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{page.name}: no heading for {target}"
