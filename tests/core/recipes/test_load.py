"""Recipes: resolution (presets, inheritance, overrides) and one-line validation errors."""

import json

import pytest

from flarecli.core.recipes.load import (
    builtin_names,
    load_recipe,
    parse_assignment,
    recipe_to_json,
    set_dotted,
)
from flarecli.core.recipes.typed import RecipeError


def stmt_raw():
    from flarecli.core.recipes.load import read_raw

    return read_raw("stmt")[0]


def write(tmp_path, data, name="r.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_stmt_presets_resolve():
    assert "stmt" in builtin_names()
    paper = load_recipe("stmt")
    assert paper.preset == "paper"
    assert paper.stages["organs"].geometry.size_zyx == (192, 192, 192)
    assert paper.stages["organs"].batch_size == 3 and paper.stages["tumor"].batch_size == 2
    assert paper.stages["teacher"].network.args["base_channels"] == 32
    assert paper.stages["tumor"].method.weight == 1.0
    assert paper.stages["organs"].method.weights == {"FL": 1.0, "CPL": 1.0, "PL": 0.5}
    cpu = load_recipe("stmt", "cpu")
    assert cpu.stages["organs"].geometry.size_zyx == (32, 32, 48)
    # the cpu tumor stage tells a lesion from its host tissue (three classes); the paper's is
    # binary
    assert cpu.stages["tumor"].network.heads == {"tumor": ((1, 2, 4, 11, 13), 14)}
    assert paper.stages["tumor"].network.heads == {"tumor": (14,)}
    assert cpu.stages["tumor"].geometry.focus == {"14": 0.4}
    smoke = load_recipe("stmt", "smoke")  # inherits cpu
    assert smoke.stages["tumor"].geometry.patch_zyx == (1, 16, 16)
    assert smoke.stages["tumor"].network.args["base_channels"] == 4
    assert smoke.stages["organs"].augmentation is None
    steps = {s.name: s for s in smoke.pipeline.steps}
    assert steps["student-organs"].init == "teacher/teacher"


def test_overrides_reach_inheriting_stages_and_json_round_trips():
    r = load_recipe("stmt", "cpu", ["stages.organs.optimizer.lr=0.002",
                                    "stages.organs.precision=fp32",
                                    "stages.coarse.epochs=3"])
    assert r.stages["organs"].optimizer.lr == 0.002
    assert r.stages["tumor"].optimizer.lr == 0.003  # set by the preset on the tumor stage
    assert r.stages["tumor"].precision == "fp32"  # inherited from organs
    assert r.stages["coarse"].epochs == 3 and r.stages["organs"].epochs == 25
    from flarecli.core.recipes.load import recipe_from_json

    again = recipe_from_json(json.loads(json.dumps(recipe_to_json(r))))
    assert again == r


def test_dotted_keys_and_values():
    assert parse_assignment("a.b=1e-3") == ("a.b", 0.001)
    assert parse_assignment("a=fp32") == ("a", "fp32")
    assert parse_assignment("a=[1, 2]") == ("a", [1, 2])
    data = {"steps": [{"name": "x", "v": 1}]}
    set_dotted(data, "steps.x.v", 2)
    set_dotted(data, "new.deep", True)
    assert data == {"steps": [{"name": "x", "v": 2}], "new": {"deep": True}}
    with pytest.raises(RecipeError, match="no such element"):
        set_dotted(data, "steps.y.v", 3)
    # into a recipe's named stages, models or subsets: the member must exist, unless set whole
    recipe = {"stages": {"organs": {"epochs": 1}}, "models": {}}
    with pytest.raises(RecipeError, match="stages.organz: no such stage") as err:
        set_dotted(recipe, "stages.organz.epochs", 3)
    assert "organs" in err.value.hint
    set_dotted(recipe, "stages.tumor", {"epochs": 2})
    set_dotted(recipe, "stages.tumor.epochs", 4)
    assert recipe["stages"] == {"organs": {"epochs": 1}, "tumor": {"epochs": 4}}
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_assignment("novalue")


BAD = [
    # (what, change, message)
    ("an unknown field, with did you mean",
     lambda d: d["stages"]["organs"].update(epoch=3),
     "stages.organs.epoch: unknown field", "did you mean 'epochs'"),
    ("a wrong type",
     lambda d: d["stages"]["coarse"].update(batch_size="two"),
     "stages.coarse.batch_size: expected an integer, got 'two'", None),
    ("a ROI taken from a stage that does not exist",
     lambda d: d["models"]["student"]["roi"].update(stage="corase"),
     "models.student.roi.stage: no stage 'corase'", "did you mean 'coarse'"),
    ("a head mapped to an id outside 0..14",
     lambda d: d["stages"]["tumor"]["network"].update(heads={"tumor": [15]}),
     "heads.tumor: 15 is not a FLARE id", None),
    ("an output head that only merges classes",
     lambda d: d["stages"]["tumor"]["network"].update(heads={"tumor": [[1, 14]]}),
     "models.student.outputs[1].head: head 'tumor' only merges classes", None),
    ("an unknown method",
     lambda d: d["stages"]["tumor"]["method"].update(name="mean_teachr"),
     "stages.tumor.method.name: 'mean_teachr' is not one of", "did you mean 'mean_teacher'"),
    ("pseudo-labels from a model folder nothing trained",
     lambda d: d["pipeline"]["steps"][2].update(model="teachr"),
     "pipeline.steps.pseudo.model: no earlier step trains into model folder 'teachr'",
     "did you mean 'teacher'"),
    ("a stage in no inference graph",
     lambda d: d["models"]["teacher"].update(outputs=[{"stage": "organs"}]),
     "pipeline.steps.teacher-organs.stage: stage 'teacher' is part of no model", None),
    ("a subset that does not exist",
     lambda d: d["stages"]["tumor"].update(data="tumour_annotated"),
     "stages.tumor.data: no subset 'tumour_annotated'", "did you mean 'tumor_annotated'"),
    ("a correct step on a step that is not a pseudolabel step",
     lambda d: d["pipeline"]["steps"][3].update(pseudo="teacher-coarse"),
     "'teacher-coarse' is not an earlier pseudolabel step", None),
    ("an init from a stage not trained before",
     lambda d: d["pipeline"]["steps"][4].update(init="student/organs"),
     "'student/organs' is not a stage trained by an earlier step", None),
    ("a bad orientation",
     lambda d: d["stages"]["coarse"].update(orientation="LPX"),
     "orientation 'LPX' is not a code like LPS", None),
    ("an absurd input size",
     lambda d: d["stages"]["coarse"]["geometry"].update(size_zyx=[100000, 2, 2]),
     "size_zyx [100000, 2, 2]: at most 1024 voxels per axis", None),
    ("smoothing across slices asked of a 3-D stage",
     lambda d: d["stages"]["organs"]["geometry"].update(slice_sigma_mm=3.0),
     "slice_sigma_mm is for 2-D networks", None),
    ("a stage name that climbs out of --out",
     lambda d: d["stages"].update({"../escaped": d["stages"]["coarse"]}),
     "stages.../escaped: '../escaped' cannot name a folder", "letters, digits"),
    ("a stage name that is an absolute path",
     lambda d: d["stages"].update({"/tmp/x": d["stages"]["coarse"]}),
     "'/tmp/x' cannot name a folder", None),
    ("a stage named like the training cache",
     lambda d: d["stages"].update({"cache": d["stages"]["coarse"]}),
     "'cache' cannot name a folder", "not 'cache'"),
    ("an empty model name",
     lambda d: d["models"].update({"": d["models"]["teacher"]}),
     "models.: '' cannot name a folder", None),
    ("a schema version from the future",
     lambda d: d.update(schema_version=7),
     "schema_version 7 is not supported", None),
]


@pytest.mark.parametrize("what,change,message,hint", BAD, ids=[b[0] for b in BAD])
def test_invalid_recipes_give_one_line_and_exit_5(tmp_path, run_cli, what, change, message,
                                                  hint):
    data = stmt_raw()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert message in e.value.message, e.value.message
    if hint:
        assert hint in (e.value.hint or "")
    res = run_cli("recipes", "show", path)
    assert res.code == 5
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("flare: error: ") and message in lines[0]
    assert len(lines) <= 2 and "Traceback" not in res.stderr
    res = run_cli("train", tmp_path, "--out", tmp_path / "m", "--recipe", path, "--stage",
                  "organs")
    assert res.code == 5 and message in res.stderr


def test_presets_and_files_that_cannot_be_read(tmp_path, run_cli):
    res = run_cli("recipes", "show", "stmt", "--preset", "cpuu")
    assert res.code == 5 and "did you mean 'cpu'" in res.stderr
    res = run_cli("recipes", "show", "stmtt")
    assert res.code == 5 and "did you mean 'stmt'" in res.stderr
    (tmp_path / "broken.json").write_text("{")
    res = run_cli("recipes", "show", tmp_path / "broken.json")
    assert res.code == 5 and "not a readable JSON recipe" in res.stderr
    res = run_cli("recipes", "show", "stmt", "--set", "stages.organs.optimizer.lr=-1")
    assert res.code == 5 and "lr must be > 0" in res.stderr
    data = stmt_raw()
    data["presets"]["loop"] = {"inherits_from": "loop"}
    res = run_cli("recipes", "show", write(tmp_path, data), "--preset", "loop")
    assert res.code == 5 and "inheritance cycle" in res.stderr


def test_recipes_lists_and_shows(run_cli):
    res = run_cli("recipes")
    assert res.code == 0 and "stmt" in res.stdout and "paper (train), cpu (demo), smoke" in \
        res.stdout
    res = run_cli("recipes", "show", "stmt", "--preset", "cpu")
    assert res.code == 0
    shown = json.loads(res.stdout)
    assert shown["preset"] == "cpu" and shown["stages"]["organs"]["geometry"]["size_zyx"] == [
        32, 32, 48]
    assert "presets" not in shown and shown["stages"]["tumor"]["optimizer"]["name"] == "adamw"


def test_an_output_head_may_learn_a_merged_context_class_that_it_never_paints():
    """The stmt cpu preset's tumor head tells lesion from host tissue (one merged class):
    the recipe loads, and the merged class maps to no FLARE id, so only lesions are painted."""
    from flarecli.core.recipes.heads import head_ids

    recipe = load_recipe("stmt", "cpu")
    heads = recipe.stages["tumor"].network.heads
    assert heads["tumor"][-1] == 14 and isinstance(heads["tumor"][0], tuple)
    ids = head_ids(heads["tumor"])
    assert list(ids[:3]) == [0, 0, 14]
