"""``flare report``: exit codes, one line per problem, the summary on stdout."""

import json
import re

from PIL import Image

from tests.core.report.test_gather import write_eval_csv


def folder(root):
    write_eval_csv(root / "eval" / "scores.csv", [
        ["a", 1, "liver", "0.9", "0.8", 10, 10, 1],
        ["b", 1, "liver", "0.4", "0.3", 10, 10, 1]])
    (root / "previews").mkdir(parents=True)
    Image.new("RGB", (64, 32), (10, 200, 30)).save(root / "previews" / "a.png")
    return root


def test_report_writes_the_page_and_says_what_it_holds(tmp_path, run_cli):
    folder(tmp_path / "work")
    res = run_cli("report", tmp_path / "work", tmp_path / "r.html")
    assert res.code == 0, res.stderr
    assert re.search(r"wrote .*r\.html: 2 cases, \d+ columns, 0 training runs from 2 sources; "
                     r"0\.\d MB, images embed", res.stdout)
    html = (tmp_path / "r.html").read_text()
    data = json.loads(re.search(r'id="flare-data">(.*?)</script>', html, re.S).group(1))
    assert [r[0] for r in data["rows"]] == ["a", "b"]


def test_a_file_that_cannot_be_parsed_is_a_note_not_a_failure(tmp_path, run_cli):
    folder(tmp_path / "work")
    (tmp_path / "work" / "infer.json").write_text('{"command": "infer", "scans": [')
    res = run_cli("report", tmp_path / "work", tmp_path / "r.html")
    assert res.code == 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert len(lines) == 1 and "infer.json: not valid JSON" in lines[0]


def test_bad_input_is_one_line_and_exit_code_3(tmp_path, run_cli):
    folder(tmp_path / "work")
    cases = [
        ((tmp_path / "nope", tmp_path / "r.html"), "no such folder"),
        ((tmp_path / "work", tmp_path / "work" / "eval" / "scores.csv"), "is an input"),
        ((tmp_path / "work", tmp_path / "r.html", "--images", "inline"), "invalid --images"),
        ((tmp_path / "work", tmp_path / "r.html", "--thumb-px", "5"), "--thumb-px 5"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append(((tmp_path / "empty", tmp_path / "r.html"), "nothing flare wrote"))
    for args, message in cases:
        res = run_cli("report", *args)
        assert res.code == 3, (args, res.stderr)
        assert res.stderr.startswith("flare: error: ") and message in res.stderr.splitlines()[0]
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "r.html").exists()
    assert (tmp_path / "work" / "eval" / "scores.csv").read_text().startswith("case,label")


def test_auto_says_when_it_links_instead_of_embedding(tmp_path, run_cli, monkeypatch):
    from flarecli.core.report import page

    folder(tmp_path / "work")
    monkeypatch.setattr(page, "EMBED_LIMIT_BYTES", 10)
    res = run_cli("report", tmp_path / "work", tmp_path / "r.html")
    assert res.code == 0 and "images link" in res.stdout
    assert "linked, not embedded" in res.stderr
