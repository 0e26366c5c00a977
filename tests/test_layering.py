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
                   "difflib", "importlib"}
        assert all(m in allowed or m.startswith("flarecli.models") for m in mods), (path, mods)


def test_help_does_not_import_torch():
    code = ("import sys\nfrom flarecli.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'SimpleITK' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False False"


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


def module_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the flarecli modules it imports, read from the AST of every module: every
    import statement at any depth (inside functions too: an import moved into a function to
    dodge a circle is still a circle). ``from PKG import name`` is an edge to the submodule
    ``PKG.name`` when there is one, else to ``PKG``. Not counted: imports inside a module's
    PEP 562 ``__getattr__``, which only forward names on first use (``flarecli.segment`` loads
    ``flarecli.api``; nothing in the package goes through it)."""
    modules = {module_of(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        hooks = {n for f in tree.body if isinstance(f, ast.FunctionDef)
                 and f.name == "__getattr__" for n in ast.walk(f)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if node in hooks:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] != "flarecli":
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    edges.add(sub if sub in modules else base)
        graph[name] = edges - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    """The modules of flarecli import each other without a circle, function-level imports
    included: each stands above everything it imports."""
    assert circles(import_graph()) == []


def test_the_circle_test_sees_function_level_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    inference = import_graph()["flarecli.core.inference.engine"]
    assert "flarecli.core.recipes.spec" in inference  # `from ... import spec as S`
    assert "flarecli.core.inference.calibration" not in inference
