"""Finding, resolving and validating recipes.

Resolution of ``load_recipe(name_or_file, preset, overrides)``, in this order:

1. the raw JSON of a built-in recipe (``flarecli/core/recipes/builtin/<name>.json``) or a file;
2. the preset: its ``inherits_from`` chain first, then its own ``set``, each a mapping of
   dotted keys to values (``stages.organs.epochs``; a list of named objects, such as
   ``pipeline.steps``, is indexed by name: ``pipeline.steps.teacher-organs.set``);
3. the caller's overrides (``flare train --set``), the same dotted keys;
4. stage inheritance: a stage with ``inherits_from`` starts as a copy of that stage, and its
   own fields replace the parent's (objects are merged key by key, lists replaced);
5. the typed parse (:mod:`flarecli.core.recipes.typed`) and the cross-checks of
   :func:`check_recipe`: every name a section uses must exist.

Every problem is one :class:`~flarecli.core.recipes.typed.RecipeError` (exit code 5) naming the
field and, for a misspelt name, the closest valid one.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from flarecli.core.errors import did_you_mean
from flarecli.core.labels import CASE_KINDS, GROUPS
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import plain_classes
from flarecli.core.recipes.typed import RecipeError, parse, to_json

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

#: Subset names every recipe knows, besides its own ``subsets``.
BUILTIN_SUBSETS: dict[str, S.Subset] = {
    "all": S.Subset(),
    **{kind: S.Subset(kinds=(kind,)) for kind in CASE_KINDS},
    "labeled": S.Subset(kinds=tuple(k for k in CASE_KINDS if k != "unlabeled")),
}

#: Train-step sources besides the names of correct steps.
SOURCES: tuple[str, ...] = ("audit", "dataset")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def read_raw(name_or_file: str | Path) -> tuple[dict[str, Any], str]:
    """The raw JSON of a built-in recipe name or a recipe file; returns (data, where)."""
    text = str(name_or_file)
    path = Path(text)
    if text in builtin_names():
        path = BUILTIN_DIR / f"{text}.json"
    elif not (path.suffix == ".json" or path.is_file()):
        raise RecipeError("recipe", f"'{text}' is neither a built-in recipe nor a file",
                          hint=did_you_mean(text, builtin_names())
                          or f"built-in recipes: {', '.join(builtin_names())}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError("recipe", f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecipeError("recipe", f"{path}: not a readable JSON recipe ({e})") from None
    except RecursionError:
        raise RecipeError("recipe", f"{path}: not a readable JSON recipe (nested too "
                          "deeply)") from None
    if not isinstance(data, dict):
        raise RecipeError("recipe", f"{path}: a recipe is a JSON object")
    return data, str(path)


# ---------------------------------------------------------------------------------------------
# dotted keys
# ---------------------------------------------------------------------------------------------

def parse_assignment(text: str) -> tuple[str, Any]:
    """'a.b.c=value' -> ('a.b.c', value): the value is JSON when it parses as JSON (numbers,
    true/false/null, lists, objects), else the plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError("--set", f"'{text}' is not KEY=VALUE",
                          hint="e.g. --set stages.organs.optimizer.lr=0.001")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


#: A recipe's top-level collections of named objects. A dotted key that reaches into one of
#: them names a member that must exist (a new member is set whole: stages.NAME={...}).
NAMED: dict[str, str] = {"stages": "stage", "models": "model", "subsets": "subset"}


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """Set ``key`` (dotted) in nested JSON, creating objects on the way. In a list of named
    objects a part names an element ('pipeline.steps.teacher.set'); an integer indexes it.
    A key through a member of a recipe's named collection (:data:`NAMED`) that is not there
    is refused: 'stages.organz.epochs' is a typo, not a new stage of one field."""
    parts = key.split(".")
    node: Any = data
    path = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = f"{path}.{part}" if path else part
        if isinstance(node, list):
            names = [e.get("name") for e in node if isinstance(e, dict)]
            if part.isdigit() and int(part) < len(node):
                index = int(part)
            elif part in names:
                index = names.index(part)
            else:
                raise RecipeError(f"{where}{here}", "no such element",
                                  hint=did_you_mean(part, [n for n in names if n])
                                  or f"elements: {', '.join(str(n) for n in names)}")
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if path in NAMED and part not in node:
                    raise RecipeError(f"{where}{here}", f"no such {NAMED[path]}",
                                      hint=did_you_mean(part, list(node))
                                      or f"{path}: {', '.join(node)}")
                if not isinstance(node.get(part), dict | list):
                    node[part] = {}
                node = node[part]
        else:
            raise RecipeError(f"{where}{path}", "is a value, not an object")
        path = here


#: Objects a child stage replaces whole instead of merging key by key: a method or an
#: augmentation keeps nothing of the parent's, and a head set is the child's own.
REPLACED: frozenset[str] = frozenset({"method", "augmentation", "heads"})


def _merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: objects merged key by key (except REPLACED ones),
    anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = (_merge(base[k], v) if k in base and k not in REPLACED
                      else copy.deepcopy(v))
        return out
    return copy.deepcopy(over)


# ---------------------------------------------------------------------------------------------
# presets and stage inheritance
# ---------------------------------------------------------------------------------------------

def preset_chain(raw: dict[str, Any], preset: str) -> list[str]:
    presets = raw.get("presets") or {}
    if not isinstance(presets, dict):
        raise RecipeError("presets", "expected an object of named presets")
    chain: list[str] = []
    name: str | None = preset
    while name is not None:
        if name not in presets:
            raise RecipeError("preset", f"'{name}' is not a preset of this recipe",
                              hint=did_you_mean(name, list(presets))
                              or f"presets: {', '.join(presets) or 'none'}")
        if name in chain:
            raise RecipeError(f"presets.{name}.inherits_from", "inheritance cycle")
        chain.append(name)
        entry = presets[name]
        if not isinstance(entry, dict):
            raise RecipeError(f"presets.{name}", "expected an object")
        unknown = set(entry) - {"inherits_from", "set", "description"}
        if unknown:
            key = sorted(unknown)[0]
            raise RecipeError(f"presets.{name}.{key}", "unknown field",
                              hint=did_you_mean(key, ["inherits_from", "set", "description"]))
        name = entry.get("inherits_from")
    return chain[::-1]


def apply_preset(raw: dict[str, Any], preset: str | None) -> dict[str, Any]:
    data = copy.deepcopy({k: v for k, v in raw.items() if k not in ("presets",
                                                                     "default_preset")})
    if preset is None:
        return data
    for name in preset_chain(raw, preset):
        changes = raw["presets"][name].get("set") or {}
        if not isinstance(changes, dict):
            raise RecipeError(f"presets.{name}.set", "expected an object of dotted keys")
        for key, value in changes.items():
            set_dotted(data, key, value, where=f"presets.{name}.set: ")
    return data


def resolve_stages(data: dict[str, Any]) -> dict[str, Any]:
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return data
    resolved: dict[str, Any] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        entry = stages[name]
        if not isinstance(entry, dict):
            raise RecipeError(f"stages.{name}", "expected an object")
        parent = entry.get("inherits_from")
        if parent is None:
            out = dict(entry)
        else:
            if parent not in stages:
                raise RecipeError(f"stages.{name}.inherits_from", f"no stage '{parent}'",
                                  hint=did_you_mean(str(parent), list(stages)))
            if parent in seen:
                raise RecipeError(f"stages.{name}.inherits_from", "inheritance cycle")
            own = {k: v for k, v in entry.items() if k != "inherits_from"}
            out = _merge(resolve(parent, (*seen, name)), own)
        out.pop("inherits_from", None)
        resolved[name] = out
        return out

    for name in stages:
        resolve(name, ())
    return {**data, "stages": resolved}


def load_recipe(name_or_file: str | Path, preset: str | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> S.Recipe:
    """Resolve and validate a recipe (see the module docstring). ``preset`` None takes the
    recipe's ``default_preset``."""
    raw, where = read_raw(name_or_file)
    if preset is None:
        preset = raw.get("default_preset")
    try:
        data = apply_preset(raw, preset)
        items = overrides.items() if isinstance(overrides, dict) else (
            parse_assignment(o) for o in overrides or [])
        for key, value in items:
            set_dotted(data, key, value, where="--set ")
        data = resolve_stages(data)
        data["preset"] = preset
        recipe = parse(S.Recipe, data)
    except RecursionError:  # JSON that parses, nested deeper than any recipe field
        raise RecipeError("recipe", f"{where}: nested too deeply") from None
    check_recipe(recipe)
    return recipe


def recipe_from_json(data: dict[str, Any], where: str = "recipe") -> S.Recipe:
    """A resolved recipe written earlier (e.g. a model folder's ``recipe.json``)."""
    try:
        recipe = parse(S.Recipe, data)
        check_recipe(recipe)
    except RecipeError as e:
        raise RecipeError(where, e.message, e.hint) from None
    except RecursionError:
        raise RecipeError(where, "nested too deeply") from None
    return recipe


def recipe_to_json(recipe: S.Recipe) -> dict[str, Any]:
    return to_json(recipe)


def list_presets(name_or_file: str | Path) -> dict[str, str]:
    raw, _ = read_raw(name_or_file)
    presets = raw.get("presets") or {}
    return {k: str(v.get("description", "")) if isinstance(v, dict) else ""
            for k, v in presets.items()}


# ---------------------------------------------------------------------------------------------
# cross-checks
# ---------------------------------------------------------------------------------------------

def subset_names(recipe: S.Recipe) -> list[str]:
    return sorted({*BUILTIN_SUBSETS, *recipe.subsets})


def check_subset(recipe: S.Recipe, subset: str | S.Subset, path: str,
                  seen: tuple[str, ...] = ()) -> None:
    if isinstance(subset, str):
        if subset in BUILTIN_SUBSETS:
            return
        if subset not in recipe.subsets:
            raise RecipeError(path, f"no subset '{subset}'",
                              hint=did_you_mean(subset, subset_names(recipe))
                              or f"subsets: {', '.join(subset_names(recipe))}")
        if subset in seen:
            raise RecipeError(path, f"subset '{subset}' refers to itself")
        check_subset(recipe, recipe.subsets[subset], f"subsets.{subset}", (*seen, subset))
        return
    for group in subset.groups or ():
        if group not in GROUPS:
            raise RecipeError(f"{path}.groups", f"'{group}' is not an audit label pattern",
                              hint=did_you_mean(group, list(GROUPS)))
    for i, part in enumerate(subset.any_of):
        check_subset(recipe, part, f"{path}.any_of[{i}]", seen)


def _stage_ref(recipe: S.Recipe, name: str, path: str) -> S.Stage:
    if name not in recipe.stages:
        raise RecipeError(path, f"no stage '{name}'",
                          hint=did_you_mean(name, list(recipe.stages))
                          or f"stages: {', '.join(recipe.stages)}")
    return recipe.stages[name]


def output_head(stage: S.Stage, output: S.Output, path: str) -> str:
    """The head an output takes (its only head when none is named)."""
    heads = list(stage.network.heads)
    if output.head is None:
        if len(heads) != 1:
            raise RecipeError(f"{path}.head", f"stage '{output.stage}' has several heads "
                              f"({', '.join(heads)}): name one")
        return heads[0]
    if output.head not in heads:
        raise RecipeError(f"{path}.head", f"'{output.head}' is not a head of stage "
                          f"'{output.stage}'", hint=did_you_mean(output.head, heads))
    return output.head


def _output_classes(recipe: S.Recipe, out: S.Output) -> set[int]:
    stage = recipe.stages.get(out.stage)
    if stage is None or (out.head is None and len(stage.network.heads) != 1):
        return set()
    head = out.head or next(iter(stage.network.heads))
    return plain_classes(stage.network.heads.get(head, ()))


def check_graph(recipe: S.Recipe, name: str, graph: S.Graph) -> None:
    path = f"models.{name}"
    if graph.roi is not None:
        _stage_ref(recipe, graph.roi.stage, f"{path}.roi.stage")
        if recipe.stages[graph.roi.stage].geometry.region != "whole":
            raise RecipeError(f"{path}.roi.stage", f"stage '{graph.roi.stage}' gives the ROI, "
                              "so it must see the whole scan (geometry.region 'whole')")
    for i, out in enumerate(graph.outputs):
        where = f"{path}.outputs[{i}]"
        stage = _stage_ref(recipe, out.stage, f"{where}.stage")
        head = output_head(stage, out, where)
        if stage.role != "segment":
            raise RecipeError(f"{where}.stage", f"stage '{out.stage}' has role "
                              f"'{stage.role}'; outputs come from 'segment' stages")
        if not plain_classes(stage.network.heads[head]):  # merged entries are context
            raise RecipeError(f"{where}.head", f"head '{head}' only merges classes; an "
                              "output head needs a class of one FLARE id to paint")
        if stage.geometry.region == "roi" and graph.roi is None:
            raise RecipeError(f"{where}.stage", f"stage '{out.stage}' sees the ROI "
                              "(geometry.region 'roi') but this model has no roi stage")
        if out.hosts is not None:
            earlier = {c for o in graph.outputs[:i] for c in _output_classes(recipe, o)}
            missing = [c for c in out.hosts if c not in earlier]
            if missing:
                raise RecipeError(f"{where}.hosts", f"class {missing[0]} is not an output of "
                                  "an earlier stage of this model", hint="hosts are classes "
                                  "the outputs before this one label")


def check_network(network: S.Network, path: str) -> None:
    """The architecture must be registered (``flarecli.models.registry``) and take every
    argument the recipe gives it -- checked when a recipe loads, so that ``flare recipes
    show``, a model folder's recipe.json and ``flare train`` agree (no network is built, and
    torch is not imported)."""
    from flarecli.models.registry import NETWORKS, arguments

    if network.arch not in NETWORKS:
        raise RecipeError(f"{path}.arch", f"unknown network '{network.arch}'",
                          hint=did_you_mean(network.arch, list(NETWORKS))
                          or f"networks: {', '.join(NETWORKS)}")
    params = arguments(network.arch)
    for key in network.args:
        if key not in params:
            raise RecipeError(f"{path}.args.{key}", f"not an argument of network "
                              f"'{network.arch}'", hint=did_you_mean(key, [
                                  p for p in params if p not in ("in_channels", "heads")]))


#: A stage, model or pipeline step name: it names a folder (``OUT/<stage>``, ``run/<model>``).
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: Folder names a run keeps for itself (the training cache beside the stages).
_RESERVED = ("cache",)


def check_folder_name(name: str, path: str) -> None:
    """A name that becomes a folder: letters, digits, '-' and '_' (64 at most), starting with
    a letter or digit, and not one a run keeps for itself. '../x' or '/abs' as a stage name
    wrote a training run outside --out; '' or 'cache' collided with --out or its cache."""
    if not _FOLDER_NAME.match(name) or name in _RESERVED:
        raise RecipeError(path, f"'{name[:80]}' cannot name a folder",
                          hint="use letters, digits, '-' and '_' (up to 64), not "
                               + ", ".join(f"'{r}'" for r in _RESERVED))


def check_recipe(recipe: S.Recipe) -> None:
    """Every name a section uses must exist, every network must be registered; raises
    RecipeError naming the field."""
    for section, names in (("stages", recipe.stages), ("models", recipe.models),
                           ("pipeline.steps", [s.name for s in recipe.pipeline.steps])):
        for name in names:
            check_folder_name(name, f"{section}.{name}")
    for name, stage in recipe.stages.items():
        check_network(stage.network, f"stages.{name}.network")
    for name, subset in recipe.subsets.items():
        if name in BUILTIN_SUBSETS:
            raise RecipeError(f"subsets.{name}", "shadows a built-in subset name")
        check_subset(recipe, subset, f"subsets.{name}")
    for name, stage in recipe.stages.items():
        check_subset(recipe, stage.data, f"stages.{name}.data")
        if isinstance(stage.method, S.Staged):
            for step in stage.method.steps:
                check_subset(recipe, step.data, f"stages.{name}.method.steps.{step.name}.data")
        if isinstance(stage.method, S.SelfTraining) and not stage.method.weights:
            raise RecipeError(f"stages.{name}.method.weights", "no kind has a weight")
    if not recipe.models:
        raise RecipeError("models", "a recipe needs at least one model (inference graph)")
    for name, graph in recipe.models.items():
        check_graph(recipe, name, graph)
    trained: dict[str, set[str]] = {}  # model folder -> stages trained so far
    pseudo_steps: set[str] = set()
    correct_steps: set[str] = set()
    in_graphs = {s for g in recipe.models.values() for s in g.stages}
    for step in recipe.pipeline.steps:
        path = f"pipeline.steps.{step.name}"
        if isinstance(step, S.TrainStep):
            _stage_ref(recipe, step.stage, f"{path}.stage")
            if step.stage not in in_graphs:
                raise RecipeError(f"{path}.stage", f"stage '{step.stage}' is part of no model "
                                  "(inference graph) of the recipe")
            if step.source not in SOURCES and step.source not in correct_steps:
                raise RecipeError(f"{path}.source", f"'{step.source}' is not 'audit', "
                                  "'dataset' or an earlier correct step",
                                  hint=did_you_mean(step.source, [*SOURCES, *correct_steps]))
            if step.data is not None:
                check_subset(recipe, step.data, f"{path}.data")
            if step.init is not None:
                model, _, stage = step.init.partition("/")
                if stage not in trained.get(model, set()):
                    raise RecipeError(f"{path}.init", f"'{step.init}' is not a stage trained "
                                      "by an earlier step (MODEL/STAGE)")
            if isinstance(step, S.RetrainStep) and step.stage not in trained.get(step.model,
                                                                               set()):
                raise RecipeError(f"{path}.kind", f"retrain: no earlier step trained "
                                  f"'{step.model}/{step.stage}'")
            trained.setdefault(step.model, set()).add(step.stage)
        elif isinstance(step, S.PseudolabelStep):
            if step.model not in trained:
                raise RecipeError(f"{path}.model", f"no earlier step trains into model "
                                  f"folder '{step.model}'",
                                  hint=did_you_mean(step.model, list(trained)))
            _complete_graph(recipe, step.graph, trained[step.model], f"{path}")
            check_subset(recipe, step.cases, f"{path}.cases")
            pseudo_steps.add(step.name)
        elif isinstance(step, S.CorrectStep):
            check_subset(recipe, step.cases, f"{path}.cases")
            if step.pseudo not in pseudo_steps:
                raise RecipeError(f"{path}.pseudo", f"'{step.pseudo}' is not an earlier "
                                  "pseudolabel step", hint=did_you_mean(step.pseudo,
                                                                        sorted(pseudo_steps)))
            correct_steps.add(step.name)
    final = recipe.pipeline.final
    if final not in trained:
        raise RecipeError("pipeline.final", f"no step trains into model folder '{final}'",
                          hint=did_you_mean(final, list(trained)))
    _complete_graph(recipe, recipe.pipeline.final_graph, trained[final], "pipeline.final")


def _complete_graph(recipe: S.Recipe, graph: str | None, stages: set[str], path: str) -> str:
    """The graph a model folder with these stages runs: ``graph`` when given (all its required
    stages must be there), else the first complete one."""
    if graph is not None:
        if graph not in recipe.models:
            raise RecipeError(f"{path}.graph", f"no model '{graph}'",
                              hint=did_you_mean(graph, list(recipe.models)))
        missing = [s for s in recipe.models[graph].required if s not in stages]
        if missing:
            raise RecipeError(f"{path}.graph", f"model '{graph}' needs stage(s) "
                              f"{', '.join(missing)}, which no earlier step trains there")
        return graph
    for name, g in recipe.models.items():
        if all(s in stages for s in g.required):
            return name
    raise RecipeError(path, "the model folder holds no complete model at this point "
                      f"(trained: {', '.join(sorted(stages))})")


# ---------------------------------------------------------------------------------------------
# command-line shortcuts for stage fields
# ---------------------------------------------------------------------------------------------

def parse_size(text: str) -> list[int]:
    """'N' or 'D,H,W' -> [D, H, W]; raises RecipeError."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise RecipeError("--size", f"'{text}': expected N or D,H,W")
    return values


def stage_shortcuts(recipe: S.Recipe, stage: str, *, model: str | None = None,
                    size: str | None = None, epochs: int | None = None,
                    iterations: int | None = None, batch_size: int | None = None,
                    lr: float | None = None, augment: bool | None = None,
                    val_fraction: float | None = None) -> dict[str, Any]:
    """The dotted assignments ``flare train``'s shortcut options stand for, on ``stage`` of a
    resolved recipe: ``--model`` (a network preset; deep supervision kept as the stage has
    it), ``--size`` (the fixed size, or the patch of a patch stage), ``--epochs``,
    ``--iterations``, ``--batch-size``, ``--lr``, ``--augment/--no-augment``,
    ``--val-fraction``."""
    spec = _stage_ref(recipe, stage, "--stage")
    key = f"stages.{stage}"
    out: dict[str, Any] = {}
    if model is not None:
        from flarecli.models.registry import PRESETS

        if model not in PRESETS:
            raise RecipeError("--model", f"'{model}' is not a network preset",
                              hint=did_you_mean(model, list(PRESETS))
                              or f"presets: {', '.join(PRESETS)}")
        args = {k: v for k, v in PRESETS[model].items() if k != "arch"}
        if "deep_supervision" in spec.network.args:
            args["deep_supervision"] = spec.network.args["deep_supervision"]
        out[f"{key}.network.arch"] = PRESETS[model]["arch"]
        out[f"{key}.network.args"] = args
    if size is not None:
        field = "size_zyx" if spec.geometry.size_zyx is not None else "patch_zyx"
        out[f"{key}.geometry.{field}"] = parse_size(size)
    for name, value in (("epochs", epochs), ("iterations", iterations),
                        ("batch_size", batch_size), ("val_fraction", val_fraction)):
        if value is not None:
            out[f"{key}.{name}"] = value
    if lr is not None:
        out[f"{key}.optimizer.lr"] = lr
    if augment is False:
        out[f"{key}.augmentation"] = None
    elif augment and spec.augmentation is None:
        out[f"{key}.augmentation"] = {}
    return out


def load_with_shortcuts(name_or_file: str | Path, preset: str | None, overrides: list[str],
                        stage: str, **shortcuts: Any) -> S.Recipe:
    """A recipe with ``--set`` overrides and then the shortcut options applied."""
    recipe = load_recipe(name_or_file, preset, overrides)
    changes = stage_shortcuts(recipe, stage, **shortcuts)
    if not changes:
        return recipe
    merged = dict(parse_assignment(o) for o in overrides)
    merged.update(changes)
    return load_recipe(name_or_file, preset, merged)
