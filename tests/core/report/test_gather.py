"""Finding flare's outputs by content and gathering them per case."""

import csv
import json
import shutil

import pytest

from flarecli.core.errors import InputError
from flarecli.core.report.gather import gather
from tests.core.report.conftest import case_means, write_json


def kinds(g):
    return {(s["kind"], s["source"]) for s in g.sources}


def test_the_demo_folder_is_gathered_from_what_the_commands_wrote(demo_folder):
    g = gather(demo_folder)
    assert kinds(g) >= {
        ("audit", "run/audit.json"), ("correct", "run/corrected/manifest.json"),
        ("pseudolabel", "run/pseudo/"), ("infer", "run/predictions/"),
        ("infer", "more/pred/"), ("evaluate", "more/eval.csv"), ("evaluate", "run/scores.csv"),
        ("evaluate summary", "more/eval.json"), ("evaluate summary", "run/scores.json"),
        ("stats", "more/stats.json"), ("previews", "more/previews/")}
    assert not g.notes
    audit = json.loads((demo_folder / "run" / "audit.json").read_text())
    for case in audit["cases"]:
        assert g.cells[case["id"]]["pattern"] == case["group"]
        assert g.cells[case["id"]]["organs"] == case["organ_category"]
    # organ DSC per case: the mean of the annotated organs' DSC in the CSV
    for key, name in (("organ_dsc", "eval.csv"), ("organ_dsc@2", "scores.csv")):
        folder = demo_folder / ("more" if name == "eval.csv" else "run")
        expected = case_means(folder / name, range(1, 14))
        assert expected and {c: g.cells[c][key] for c in expected} == pytest.approx(
            expected, abs=1e-5)
    manifest = json.loads((demo_folder / "run" / "corrected" / "manifest.json").read_text())
    assert {c["id"]: c["kind"] for c in manifest["cases"]} == {
        c: cells["kind"] for c, cells in g.cells.items() if "kind" in cells}
    record = json.loads((demo_folder / "run" / "pseudo" / "pseudolabel.json").read_text())
    for scan in record["scans"]:
        assert g.cells[scan["case"]]["score"] == pytest.approx(scan["score"], abs=1e-4)
    stats = json.loads((demo_folder / "more" / "stats.json").read_text())
    for case in stats["cases"]:
        assert g.cells[case["id"]]["lesions"] == case["lesion_count"]
    previews = sorted((demo_folder / "more" / "previews").glob("*.png"))
    assert previews and all(g.cells[p.stem]["preview"] == p for p in previews)
    assert {r.label for r in g.training} == {f"run/{m}/" for m in (
        "teacher/coarse", "teacher/teacher", "student/coarse", "student/organs",
        "student/tumor")}
    tumor = next(r for r in g.training if r.label == "run/student/tumor/")
    assert ("stage", "tumor") in tumor.facts and ("selected epoch", "1") in tumor.facts
    # the second source of a kind starts hidden; both preview folders would show
    hidden = {c.key for c in g.columns if not c.visible}
    assert "organ_dsc@2" in hidden and "organ_dsc" not in hidden


def test_files_are_recognised_by_content_not_name(demo_folder, tmp_path):
    shutil.copy(demo_folder / "run" / "audit.json", tmp_path / "whatever.json")
    shutil.copy(demo_folder / "more" / "eval.csv", tmp_path / "a.csv")
    shutil.copy(demo_folder / "run" / "student" / "tumor" / "metrics.jsonl", tmp_path / "log.jsonl")
    (tmp_path / "other.json").write_text('{"cases": [1, 2], "summary": {"n": 2}}')
    (tmp_path / "other.csv").write_text("case,dsc\nx,0.5\n")
    g = gather(tmp_path)
    assert kinds(g) == {("audit", "whatever.json"), ("evaluate", "a.csv")}
    assert [r.label for r in g.training] == ["./"]
    assert not g.notes


def test_what_cannot_be_parsed_is_one_note_each(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "audit.json").write_text('{"cases": [')
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.jsonl").write_text("{nope\n")
    (tmp_path / ".hidden.json").write_text("{")  # hidden: a .part file, say
    g = gather(tmp_path)
    notes = dict(g.notes)
    assert set(notes) == {str(tmp_path / p) for p in (
        "run/audit.json", "bad.csv", "broken.png", "m/metrics.jsonl")}
    assert "not valid JSON" in notes[str(tmp_path / "run" / "audit.json")]
    assert "unreadable" in notes[str(tmp_path / "bad.csv")]
    assert "not a PNG" in notes[str(tmp_path / "broken.png")]
    assert not g.cells and not g.training


@pytest.mark.parametrize("odd", [
    {"cases": [{"id": "x"}], "summary": {"organ_full": 0}, "source": "abc"},
    {"cases": [{"id": "x"}], "summary": {"organ_full": 0, "groups": [1, 2]}},
    {"cases": [{"id": "x", "labeled": True, "organs": 5}], "summary": {"organ_full": 0}},
], ids=["source a string", "groups a list", "organs a number"])
def test_a_file_with_a_field_of_another_shape_is_a_note_and_the_rest_is_read(
        odd, demo_folder, tmp_path):
    """A hand-edited file that looks like flare's stopped the whole page (AttributeError,
    TypeError, KeyError); it is left out with a note, and every other file is read."""
    shutil.copy(demo_folder / "more" / "eval.csv", tmp_path / "a.csv")
    write_json(tmp_path / "odd" / "odd.json", odd)
    g = gather(tmp_path)
    assert [(n, "left out" in why) for n, why in g.notes] == [
        (str(tmp_path / "odd" / "odd.json"), True)]
    assert tmp_path / "odd" / "odd.json" not in g.read
    assert kinds(g) == {("evaluate", "a.csv")} and g.cells


def test_a_stats_entry_without_lesion_fields_is_read(tmp_path):
    write_json(tmp_path / "s.json", {"min_tumor_mm3": 100, "cases": [{"id": "a", "classes": {}}]})
    g = gather(tmp_path)
    assert not g.notes and ("stats", "s.json") in kinds(g)


def test_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        gather(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="is a file"):
        gather(tmp_path / "f")


EVAL_HEADER = ["case", "label", "name", "dsc", "nsd", "gt_voxels", "pred_voxels", "annotated"]


def write_eval_csv(path, rows, extra=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVAL_HEADER + list(extra))
        w.writerows(rows)


def test_not_annotated_and_nan_cells_are_left_out_of_the_case_means(tmp_path):
    write_eval_csv(tmp_path / "e.csv", [
        ["a", 1, "liver", "0.9", "0.8", 10, 10, 1],
        ["a", 2, "right_kidney", "0.5", "0.4", 10, 10, 1],
        ["a", 3, "spleen", "", "", 10, 10, 0],      # not annotated
        ["a", 5, "aorta", "nan", "nan", 10, 10, 1],  # official protocol: a one-slice GT
        ["a", 14, "tumor", "0.25", "0.2", 10, 10, 1]])
    g = gather(tmp_path)
    assert g.cells["a"]["organ_dsc"] == pytest.approx(0.7)
    assert g.cells["a"]["organ_nsd"] == pytest.approx(0.6)
    assert g.cells["a"]["tumor_dsc"] == pytest.approx(0.25)
    assert "dsc_spleen" not in g.cells["a"] and g.cells["a"]["dsc_liver"] == 0.9


def test_lesion_figures_are_read_when_present(tmp_path):
    write_eval_csv(tmp_path / "e.csv", [
        ["a", 1, "liver", "0.9", "0.8", 10, 10, 1, "", ""],
        ["a", 14, "tumor", "0.5", "0.4", 10, 10, 1, "3", "2"],
        ["b", 14, "tumor", "1", "1", 0, 0, 1, "0", "0"]],
        extra=["lesions_gt", "lesions_detected"])
    summary = {"protocol": "exact", "organ_dsc": 0.9, "per_class": {"1": {"name": "liver",
               "dsc": 0.9, "n": 1}},
               "lesions": {"f1": 0.8, "sensitivity": 0.667, "by_size": {"small": 0.5},
                           "cases": [{"case": "a", "gt": 3, "detected": 2}]}}
    write_json(tmp_path / "s.json", summary)
    g = gather(tmp_path)
    assert g.cells["a"]["lesions_gt"] == 3 and g.cells["a"]["lesions_detected"] == 2
    assert g.cells["b"]["lesions_gt"] == 0
    assert g.cells["a"]["lesion_gt"] == 3 and g.cells["a"]["lesion_detected"] == 2
    block = next(b for b in g.blocks if b["title"] == "evaluate summary")
    assert ("lesions: f1", 0.8) in block["items"]
    assert any(t["caption"] == "lesions: by_size" for t in block["tables"])
    # and without them: no lesion column at all
    summary.pop("lesions")
    write_json(tmp_path / "s.json", summary)
    write_eval_csv(tmp_path / "e.csv", [["a", 14, "tumor", "0.5", "0.4", 10, 10, 1]])
    assert not [c for c in gather(tmp_path).columns if "lesion" in c.key]


def test_a_csv_beside_the_json_it_repeats_is_read_once(demo_folder, tmp_path):
    for name in ("pseudolabel.json",):
        shutil.copy(demo_folder / "run" / "pseudo" / name, tmp_path / name)
    record = json.loads((tmp_path / "pseudolabel.json").read_text())
    with open(tmp_path / "scores.csv", "w") as f:
        f.write("case,score,confidence,agreement,written\n")
        for scan in record["scans"]:
            f.write(f"{scan['case']},0.5,0.5,,1\n")
    g = gather(tmp_path)
    assert kinds(g) == {("pseudolabel", "./")}
    assert all(not k.endswith("@2") for cells in g.cells.values() for k in cells)
    # elsewhere, the same CSV is a second source
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "scores.csv", tmp_path / "elsewhere" / "scores.csv")
    g = gather(tmp_path)
    assert ("pseudolabel", "elsewhere/scores.csv") in kinds(g)
    assert {cells["score@2"] for cells in g.cells.values()} == {0.5}


def test_a_stats_csv_alone_gives_what_its_json_gives(demo_folder, tmp_path):
    from flarecli.cli import main

    for args in (["--json", tmp_path / "j" / "stats.json"], ["--csv", tmp_path / "c" / "st.csv"]):
        try:
            main(["stats", str(demo_folder / "more" / "pred"), *map(str, args)])
        except SystemExit as e:
            assert not e.code
    from_json, from_csv = gather(tmp_path / "j"), gather(tmp_path / "c")
    assert from_json.cells and from_json.cells == from_csv.cells
