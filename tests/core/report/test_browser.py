"""The report in a real browser: headless Chromium driven by Playwright.

Skipped where Playwright (the dev extra) or a Chromium (Debian: ``apt-get install chromium``)
is missing; ``.ci/run`` installs Chromium where it can. Playwright's own browser download is
not used: it drives the system's Chromium.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from flarecli.core.report.page import write_report
from tests.core.report.conftest import case_means
from tests.core.report.synthetic import write_big_folder

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _why_not() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium() is None:
        return "no Chromium installed (Debian: apt-get install chromium)"
    return None


# decided before any fixture runs, so a skip costs nothing (not even the demo folder)
pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        # Playwright gives each launch a fresh temporary profile
        b = p.chromium.launch(executable_path=chromium(), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def open_(path, width=1400, height=900):
        context = browser.new_context(viewport={"width": width, "height": height},
                                      accept_downloads=True)
        pg = context.new_page()
        pg.problems = []
        pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        pg.on("request", lambda r: pg.problems.append(f"request {r.url}")
              if not r.url.startswith(("file:", "data:", "blob:")) else None)
        t0 = time.perf_counter()
        pg.goto(path.as_uri())
        pg.wait_for_selector("body[data-ready='1']")
        pg.load_seconds = time.perf_counter() - t0
        pages.append(context)
        return pg

    yield open_
    for context in pages:
        context.close()


def shown_cases(pg) -> list[str]:
    return pg.eval_on_selector_all("#table tbody tr", "rows => rows.map(r => r.dataset.case)")


def test_the_demo_report_in_a_browser(demo_folder, tmp_path, open_page):
    out = tmp_path / "report.html"
    write_report(demo_folder, out)
    pg = open_page(out)
    assert pg.problems == []  # no console error, no page error, no request leaves the file
    everyone = shown_cases(pg)
    assert len(everyone) == len(set(everyone)) > 10

    # sorting by organ DSC puts the worst case first, and the cases without one last
    dsc = case_means(demo_folder / "more" / "eval.csv", range(1, 14))
    pg.click("th[data-key='organ_dsc'] button")
    order = shown_cases(pg)
    assert order[: len(dsc)] == sorted(dsc, key=lambda c: (dsc[c], c))
    assert pg.get_attribute("th[data-key='organ_dsc']", "aria-sort") == "ascending"
    pg.click("th[data-key='organ_dsc'] button")
    assert shown_cases(pg)[0] == max(dsc, key=dsc.get)

    # the filter hides rows: a case id, then a column test
    worst = min(dsc, key=dsc.get)
    pg.fill("#filter", worst)
    pg.press("#filter", "Enter")
    assert shown_cases(pg) == [worst]
    audit = json.loads((demo_folder / "run" / "audit.json").read_text())
    tumor_only = {c["id"] for c in audit["cases"] if c["group"] == "tumor_only"}
    pg.fill("#filter", "pattern=tumor_only")
    pg.press("#filter", "Enter")
    assert set(shown_cases(pg)) == tumor_only and tumor_only
    assert pg.inner_text("#count") == f"{len(tumor_only)} of {len(everyone)} cases"
    pg.fill("#filter", "")
    pg.press("#filter", "Enter")
    assert len(shown_cases(pg)) == len(everyone)
    # the summary's worst cases: a click shows that case alone
    lowest = pg.locator("#worst .worst", has_text="lowest organ DSC").locator("button").first
    assert lowest.inner_text() == worst
    lowest.click()
    assert shown_cases(pg) == [worst] and pg.input_value("#filter") == f"case={worst}"
    pg.fill("#filter", "")
    pg.press("#filter", "Enter")

    # a thumbnail opens the full-size preview; Escape closes it
    assert pg.is_hidden("#viewer")
    pg.click(f"tr[data-case='{worst}'] .thumb")
    assert pg.is_visible("#viewer")
    png = demo_folder / "more" / "previews" / f"{worst}.png"
    with Image.open(png) as img:
        width = img.width
    assert pg.eval_on_selector("#viewer-img", "i => i.complete && i.naturalWidth") == width
    assert pg.inner_text("#viewer-caption") == f"more/previews/{worst}.png"
    pg.keyboard.press("Escape")
    assert pg.is_hidden("#viewer")

    # the selected ids as a text list and a CSV, in the table's order (best DSC first now)
    picked = order[:2]
    for case in picked:
        pg.check(f"input[data-case='{case}']")
    expected = [c for c in shown_cases(pg) if c in picked]
    assert expected == picked[::-1]
    pg.click("#export")
    assert pg.input_value("#export-text") == "".join(f"{c}\n" for c in expected)
    with pg.expect_download() as download:
        pg.click("#export-txt")
    assert download.value.path().read_text().split() == expected
    with pg.expect_download() as download:
        pg.click("#export-csv")
    lines = download.value.path().read_text().splitlines()
    assert lines[0].startswith("case,") and "organ_dsc" in lines[0].split(",")
    assert [line.split(",")[0] for line in lines[1:]] == expected
    pg.click("#export-close")

    # a screenshot: not blank, and the table with its coloured DSC cells in view
    pg.evaluate("document.getElementById('cases').scrollIntoView()")
    shot = np.asarray(Image.open(io.BytesIO(pg.screenshot())).convert("RGB")).astype(int)
    assert shot.std() > 20
    box = pg.locator("#table").bounding_box()
    assert box["y"] < 900 and box["y"] + box["height"] > 0 and box["width"] > 600
    top, bottom = max(0, int(box["y"])), min(900, int(box["y"] + box["height"]))
    table = shot[top:bottom, int(box["x"]):int(box["x"] + box["width"])]
    low_dsc = np.array([244, 194, 194])  # hsl(0, 70%, 86%): a DSC cell near 0
    assert (np.abs(table - low_dsc).sum(axis=-1) <= 3).sum() > 200
    assert pg.problems == []


def test_linked_previews_load_from_beside_the_page(demo_folder, tmp_path, open_page):
    out = tmp_path / "elsewhere" / "report.html"
    write_report(demo_folder, out, images="link")
    pg = open_page(out)
    thumb = pg.locator(".thumb img").first
    thumb.scroll_into_view_if_needed()  # thumbnails load lazily, when in view
    pg.wait_for_function("i => i.complete", arg=thumb.element_handle())
    src = thumb.get_attribute("src")
    assert src.startswith("../") and src.endswith(".png")
    with Image.open(out.parent / src) as img:
        assert thumb.evaluate("i => i.naturalWidth") == img.width
    assert pg.problems == []


def test_5000_cases_stay_fast(tmp_path, open_page):
    answers = write_big_folder(tmp_path / "big", 5000)
    out = tmp_path / "big.html"
    write_report(tmp_path / "big", out, images="none")
    pg = open_page(out)
    assert pg.problems == []
    assert len(shown_cases(pg)) == 100  # one page of rows in the document, not 5,000
    sort_ms = pg.evaluate("""() => { const t = performance.now();
        document.querySelector("th[data-key='organ_dsc'] button").click();
        return performance.now() - t; }""")
    assert shown_cases(pg)[0] == answers["worst"]
    filter_ms = pg.evaluate("""() => { const f = document.getElementById('filter');
        f.value = 'organ_dsc<0.5 pattern=5_organs'; const t = performance.now();
        f.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));
        return performance.now() - t; }""")
    expected = sum(1 for k, c in enumerate(answers["dsc"]) if answers["dsc"][c] < 0.5
                   and k % 5 == 1)
    assert pg.inner_text("#count") == f"{expected} of 5000 cases"
    print(f"\n5,000 cases in Chromium: {out.stat().st_size / 2**20:.2f} MB, loaded and drawn in "
          f"{pg.load_seconds:.2f} s, sort {sort_ms:.0f} ms, filter {filter_ms:.0f} ms")
