import json

import pytest

from flarecli.core.curation.subsets import (
    SourceCase,
    cases_from_manifest,
    read_source,
    select,
)
from flarecli.core.errors import InputError
from flarecli.core.recipes.load import BUILTIN_SUBSETS
from flarecli.core.recipes.spec import Subset


def test_cases_from_an_audit_manifest(tmp_path):
    def entry(i, category, tumor, organs):
        return {"id": f"c{i}", "image": f"/i/{i}", "label": f"/l/{i}", "organs": organs,
                "tumor": tumor, "organ_category": category, "labeled": True, "problems": []}

    m = {"schema_version": 1, "cases": [
        entry(0, "full", False, list(range(1, 14))), entry(1, "partial", True, [1, 2]),
        entry(2, "none", True, []), entry(3, "full", True, list(range(1, 14))),
        {**entry(4, "full", False, list(range(1, 14))), "problems": ["bad"]},
        {"id": "u", "image": "/i/u", "label": None, "organs": [], "tumor": False,
         "organ_category": "none", "labeled": False, "problems": []}]}
    for i in ("0", "1", "2", "3"):  # the labels a manifest names must exist
        (tmp_path / "l").mkdir(exist_ok=True)
        (tmp_path / "l" / i).touch()
    m["cases"] = [{**e, "label": e["label"] and str(tmp_path / e["label"].lstrip("/"))}
                  for e in m["cases"]]
    (tmp_path / "m.json").write_text(json.dumps(m))
    cases, notes, _ = cases_from_manifest(tmp_path / "m.json")
    kinds = {c.id: c.kind for c in cases}
    assert kinds == {"c0": "FL", "c1": "partial", "c2": "partial", "c3": "FL",
                     "u": "unlabeled"}
    assert "1 manifest cases have problems" in notes[0] and "c4" in notes[0]
    groups = {c.id: c.group for c in cases}
    assert groups == {"c0": "13_organs", "c1": "other", "c2": "tumor_only",
                      "c3": "13_organs", "u": "unlabeled"}
    tumor = select(cases, "tumor_annotated", {**BUILTIN_SUBSETS,
                                              "tumor_annotated": Subset(annotates_all=(14,))})
    assert [c.id for c in tumor] == ["c1", "c2", "c3"]
    assert [c.id for c in select(cases, "FL", BUILTIN_SUBSETS)] == ["c0", "c3"]
    assert [c.id for c in select(cases, "labeled", BUILTIN_SUBSETS)] == ["c0", "c1", "c2",
                                                                         "c3"]


def test_relative_paths_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "sub").mkdir()
    m = {"cases": [{"id": "a", "image": "img/a.nii.gz", "label": "lab/a.nii.gz", "kind": "PL",
                    "annotated": []}]}
    (tmp_path / "sub" / "m.json").write_text(json.dumps(m))
    (tmp_path / "sub" / "lab").mkdir()
    (tmp_path / "sub" / "lab" / "a.nii.gz").touch()
    (case,), _, _ = cases_from_manifest(tmp_path / "sub" / "m.json")
    assert case.image == str(tmp_path.resolve() / "sub" / "img" / "a.nii.gz")


def test_subset_conditions():
    def case(cid, kind, *annotated):
        return SourceCase(cid, "", "", kind, annotated)

    cases = [case("full", "FL", *range(1, 15)), case("five", "partial", 1, 2, 3, 4, 13),
             case("five_t", "partial", 1, 2, 3, 4, 13, 14), case("t", "partial", 14),
             case("u", "unlabeled"), case("cpl", "CPL", 1, 2)]
    named = dict(BUILTIN_SUBSETS)

    def ids(subset):
        return [c.id for c in select(cases, subset, named)]

    five = (1, 2, 3, 4, 13)
    assert ids(Subset(annotates_any=five, annotates_only=five)) == ["cpl", "five"]
    assert ids(Subset(annotates_any=five, annotates_only=(*five, 14),
                      annotates_all=(14,))) == ["five_t"]
    assert ids(Subset(annotates_only=(14,), annotates_all=(14,))) == ["t"]
    assert ids(Subset(groups=("5_organs", "tumor_only"))) == ["five", "t"]
    assert ids(Subset(any_of=("unlabeled", Subset(kinds=("CPL",))))) == ["cpl", "u"]
    assert ids(Subset(kinds=("FL", "partial"), annotates_all=(14,))) == ["five_t", "full",
                                                                          "t"]


def test_a_missing_source_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such dataset folder or manifest"):
        read_source(tmp_path / "nope.json")
    with pytest.raises(InputError, match="no imagesTr"):
        read_source(tmp_path)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a flare manifest"):
        read_source(tmp_path / "bad.json")
