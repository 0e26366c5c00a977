"""Layering: commands -> core -> models; core never imports typer/rich; --help stays light."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "flarecli"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.module.startswith("flarecli") else
                      node.module.split(".")[0])
    return names


def test_core_never_imports_the_cli_layer():
    for path in (PKG / "core").rglob("*.py"):
        mods = imported_modules(path)
        assert not mods & {"typer", "rich", "click"}, path
        assert not any(m.startswith("flarecli.commands") for m in mods), path
        assert "print" not in {n.id for n in ast.walk(ast.parse(path.read_text()))
                               if isinstance(n, ast.Name)}, f"{path} prints"


def test_models_import_only_torch():
    for path in (PKG / "models").rglob("*.py"):
        mods = imported_modules(path)
        allowed = {"torch", "__future__", "dataclasses", "typing", "math", "collections",
                   "difflib"}
        assert all(m in allowed or m.startswith("flarecli.models") for m in mods), (path, mods)


def test_help_does_not_import_torch():
    code = ("import sys\nfrom flarecli.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'SimpleITK' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_commands_never_import_the_cli():
    """The table of contents imports the commands, never the other way round: demo and the
    examples run pipelines through the core's API, not through argv."""
    for path in (PKG / "commands").rglob("*.py"):
        assert "flarecli.cli" not in imported_modules(path), path
    for path in (PKG.parent / "examples").rglob("*.py"):
        mods = imported_modules(path)
        assert "flarecli.cli" not in mods and not any(
            m.startswith("flarecli.commands") for m in mods), path


def test_the_public_api_is_core_only():
    mods = imported_modules(PKG / "api.py")
    flare = {m for m in mods if m.startswith("flarecli")}
    assert flare and all(m.startswith("flarecli.core") for m in flare), flare
