"""The page: one self-contained file, its data blob, images embedded or linked."""

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image

from flarecli.core.errors import InputError
from flarecli.core.io import files
from flarecli.core.report import page
from flarecli.core.report.page import write_report
from tests.core.report.synthetic import write_big_folder
from tests.core.report.test_gather import write_eval_csv


def blob(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="flare-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def previews_folder(root: Path, n=3, size=(910, 256)) -> Path:
    (root / "previews").mkdir(parents=True)
    for k in range(n):
        Image.new("RGB", size, (40 * k, 100, 200)).save(root / "previews" / f"c{k}.png")
    write_eval_csv(root / "e.csv", [[f"c{k}", 1, "liver", f"0.{k + 1}", "0.5", 1, 1, 1]
                                    for k in range(n)])
    return root


def test_the_page_is_one_file_that_loads_nothing_from_outside(tmp_path):
    previews_folder(tmp_path / "f")
    result = write_report(tmp_path / "f", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result.images == "embed" and result.cases == 3
    # no external reference of any kind: every src is a data: URI, no stylesheet link
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert "default-src 'none'" in html
    data = blob(html)
    assert [r[0] for r in data["rows"]] == ["c0", "c1", "c2"]
    keys = [c["key"] for c in data["columns"]]
    assert keys[0] == "case" and "organ_dsc" in keys and "preview" in keys
    assert data["rows"][1][keys.index("organ_dsc")] == pytest.approx(0.2)


def test_embedded_previews_are_a_small_thumbnail_and_the_png_itself(tmp_path):
    previews_folder(tmp_path / "f")
    write_report(tmp_path / "f", tmp_path / "r.html", thumb_px=200)
    data = blob((tmp_path / "r.html").read_text())
    thumb, full, caption = data["pictures"][0]
    assert thumb.startswith("data:image/jpeg;base64,") and caption == "previews/c0.png"
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as img:
        assert img.size == (200, round(256 * 200 / 910))
    assert base64.b64decode(full.split(",", 1)[1]) == (tmp_path / "f" / "previews" /
                                                        "c0.png").read_bytes()


def test_linked_previews_resolve_from_the_page(tmp_path):
    previews_folder(tmp_path / "f")
    out = tmp_path / "elsewhere" / "deep" / "r.html"
    write_report(tmp_path / "f", out, images="link")
    data = blob(out.read_text())
    thumb, full, _ = data["pictures"][2]
    assert thumb == full and not thumb.startswith("data:")
    target = (out.parent / urllib.parse.unquote(full)).resolve()
    assert target == (tmp_path / "f" / "previews" / "c2.png").resolve()
    write_report(tmp_path / "f", out, images="none")
    data = blob(out.read_text())
    assert not data["pictures"] and "preview" not in [c["key"] for c in data["columns"]]


def test_auto_links_when_the_previews_are_too_many_to_embed(tmp_path, monkeypatch):
    previews_folder(tmp_path / "f")
    assert write_report(tmp_path / "f", tmp_path / "a.html").images == "embed"
    monkeypatch.setattr(page, "EMBED_LIMIT_BYTES", 100)
    result = write_report(tmp_path / "f", tmp_path / "b.html")
    assert result.images == "link" and "linked, not embedded" in result.images_reason


def test_a_case_id_cannot_break_out_of_the_data(tmp_path):
    evil = "x</script><script>alert(1)</script>"
    write_eval_csv(tmp_path / "f" / "e.csv", [[evil, 1, "liver", "0.5", "0.5", 1, 1, 1]])
    write_report(tmp_path / "f", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert html.count("</script>") == 2  # the blob's and the script's own
    assert blob(html)["rows"][0][0] == evil


def test_training_curves_are_embedded_or_linked(demo_folder, tmp_path):
    result = write_report(demo_folder / "run" / "student", tmp_path / "r.html")
    data = blob((tmp_path / "r.html").read_text())
    assert result.training == 3 and [t["label"] for t in data["training"]] == [
        "coarse/", "organs/", "tumor/"]
    for t in data["training"]:
        with Image.open(io.BytesIO(base64.b64decode(t["image"].split(",", 1)[1]))) as img:
            assert img.size == (900, 600)
    # every training run draws its own progress.png, which a linked page links
    write_report(demo_folder / "run" / "student", tmp_path / "l.html", images="link")
    linked = {t["label"]: t["image"] for t in blob((tmp_path / "l.html").read_text())[
        "training"]}
    for stage in ("coarse", "organs", "tumor"):
        run = demo_folder / "run" / "student" / stage
        assert (tmp_path / urllib.parse.unquote(linked[f"{stage}/"])).resolve() == (
            run / "progress.png").resolve()
    shutil.move(run / "progress.png", tmp_path / "saved.png")
    try:  # without the run's PNG the curves are drawn into the page
        write_report(demo_folder / "run" / "student", tmp_path / "l.html", images="link")
        linked = {t["label"]: t["image"] for t in blob((tmp_path / "l.html").read_text())[
            "training"]}
        assert linked["tumor/"].startswith("data:image/png")
    finally:
        shutil.move(tmp_path / "saved.png", run / "progress.png")


def test_5000_cases_make_a_page_under_5_mb(tmp_path):
    answers = write_big_folder(tmp_path / "big", 5000)
    t0 = time.perf_counter()
    result = write_report(tmp_path / "big", tmp_path / "r.html", images="none")
    seconds = time.perf_counter() - t0
    size = (tmp_path / "r.html").stat().st_size
    print(f"\n5,000 cases: {size / 2**20:.2f} MB, {result.columns} columns, written in "
          f"{seconds:.1f} s")
    assert result.cases == 5000 and size == result.bytes < 5 * 2**20
    data = blob((tmp_path / "r.html").read_text())
    keys = [c["key"] for c in data["columns"]]
    rows = {r[0]: r for r in data["rows"]}
    i = keys.index("organ_dsc")
    assert rows[answers["worst"]][i] == pytest.approx(answers["dsc"][answers["worst"]],
                                                      abs=1e-4)


def test_where_the_page_may_not_go(tmp_path):
    previews_folder(tmp_path / "f")
    with pytest.raises(InputError, match="is an input"):
        write_report(tmp_path / "f", tmp_path / "f" / "e.csv")
    with pytest.raises(InputError, match="name of a scan"):
        write_report(tmp_path / "f", tmp_path / "r.nii.gz")
    with pytest.raises(InputError, match="is a folder"):
        write_report(tmp_path / "f", tmp_path / "f" / "previews")
    with pytest.raises(InputError, match="invalid --images 'embedd'") as e:
        write_report(tmp_path / "f", tmp_path / "r.html", images="embedd")
    assert e.value.hint == "did you mean 'embed'?"
    with pytest.raises(InputError, match="--thumb-px 8"):
        write_report(tmp_path / "f", tmp_path / "r.html", thumb_px=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="nothing flare wrote"):
        write_report(tmp_path / "empty", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_the_page_is_written_atomically_with_the_umask(tmp_path):
    previews_folder(tmp_path / "f")
    out = tmp_path / "f" / "report.html"  # beside what it reports on is fine
    write_report(tmp_path / "f", out)
    assert out.stat().st_mode & 0o777 == 0o666 & ~files._UMASK
    assert not [p for p in os.listdir(tmp_path / "f") if p.startswith(".")]
    again = write_report(tmp_path / "f", out)  # the page itself is never read as a source
    assert again.cases == 3


def test_nan_and_infinity_in_a_source_become_empty_cells(tmp_path):
    # Python's json writes NaN: the official protocol gives it for a GT on one slice
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "s.json").write_text(
        '{"protocol": "flare23", "organ_dsc": 0.5, "tumor_dsc": NaN, "tumor_nsd": Infinity, '
        '"per_class": {"14": {"name": "tumor", "dsc": NaN, "n": 1}}, '
        '"lesions": {"f1": NaN, "cases": [{"case": "a", "gt": NaN, "found": 1}]}}')
    write_report(tmp_path / "f", tmp_path / "r.html")
    data = blob((tmp_path / "r.html").read_text())
    items = dict(next(b for b in data["blocks"] if b["title"] == "evaluate summary")["items"])
    assert items["tumor DSC"] is None and items["tumor NSD"] is None
    assert items["lesions: f1"] is None and items["organ DSC"] == 0.5
    row = dict(zip([c["key"] for c in data["columns"]], data["rows"][0], strict=True))
    assert row == {"case": "a", "lesion_gt": None, "lesion_found": 1.0}
