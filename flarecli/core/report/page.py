"""The report page: one self-contained HTML file from what :func:`gather` found.

The page is one file with its stylesheet, its script and its data inline; it loads nothing
from the network (its Content-Security-Policy forbids it), so it opens from a shared drive,
a zip or a mail attachment in any browser. Everything the script shows is one JSON blob in
``<script type="application/json" id="flare-data">``:

``columns``   ``[{key, label, source, kind, group, visible, unit, digits, help}]``; column 0
              is the case id
``rows``      one array per case, aligned with ``columns`` (``null`` where a source has
              nothing for the case; an image cell is an index into ``pictures``)
``pictures``  ``[thumbnail src, full-size src, caption]`` per preview
``blocks``    a block per source (items, tables, worst cases, cards for the top);
              ``sources``, ``training``, ``notes``; ``title``, ...

Previews are either embedded (``data:`` URIs: a JPEG thumbnail ``thumb_px`` wide and the
PNG itself for the full size: the page stands alone) or linked by their path relative to
the page (small, but the folder must travel with it). ``auto`` embeds them while the PNGs
add up to at most :data:`EMBED_LIMIT_BYTES`, and links them beyond. Training curves are
drawn afresh from ``metrics.jsonl`` and embedded, or -- when linking -- the run's own
``progress.png`` is linked where there is one.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError, check_choice
from flarecli.core.report.assets import CSS, JS
from flarecli.core.report.gather import Gathered, gather

IMAGE_MODES = ("auto", "embed", "link", "none")
#: ``auto`` embeds previews while their PNG files add up to at most this.
EMBED_LIMIT_BYTES = 32 * 2**20
THUMB_PX = 240
JPEG_QUALITY = 80

CSP = ("default-src 'none'; img-src data: blob: 'self' file:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


@dataclass
class Report:
    """What :func:`write_report` made: the page's path and size, the image mode used (and
    why, when ``auto`` chose), how many cases and training runs, the notes."""

    path: Path
    bytes: int
    images: str
    images_reason: str | None
    cases: int
    columns: int
    training: int
    sources: int
    notes: list[tuple[str, str]]


def choose_images(g: Gathered, images: str) -> tuple[str, str | None]:
    """Resolve ``auto`` to ``embed`` or ``link`` by the previews' total size; the mode and,
    for ``auto``, why."""
    check_choice("--images", images, IMAGE_MODES)
    if images != "auto":
        return images, None
    total = sum(_size(p) for p in _preview_paths(g))
    if total <= EMBED_LIMIT_BYTES:
        return "embed", None
    return "link", (f"the previews add up to {total / 2**20:.0f} MB (over "
                    f"{EMBED_LIMIT_BYTES // 2**20} MB): linked, not embedded; keep the page "
                    "beside the folder, or give --images embed")


def write_report(folder: Path, out: Path, images: str = "auto", thumb_px: int = THUMB_PX,
                 title: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """Gather ``folder`` and write the page to ``out`` atomically.

    ``images``: ``auto``, ``embed``, ``link`` or ``none`` (see the module docstring);
    ``thumb_px``: thumbnail width in pixels (32..1024); ``progress(done, total)`` is called
    as previews are encoded. Raises InputError for a missing folder, a folder where flare
    wrote nothing, a bad option or an unusable ``out`` (one of the files read, a scan's
    name, a place that cannot be written); WriteFailed when the page cannot be written.
    """
    from flarecli.core.io.files import atomic_path
    from flarecli.core.io.outputs import check_output_file

    check_choice("--images", images, IMAGE_MODES)
    if not 32 <= thumb_px <= 1024:
        raise InputError(f"--thumb-px {thumb_px}: must be within 32..1024")
    out = Path(out)
    g = gather(folder)
    if not g.cells and not g.training:
        raise InputError(f"{folder}: nothing flare wrote was found there",
                         hint="give a flare demo folder or a work folder holding audit, "
                         "pseudolabel, infer, evaluate, stats or preview outputs")
    check_output_file(out, "the report", reads=g.read)
    mode, reason = choose_images(g, images)
    data = page_data(g, out.parent, mode, thumb_px, title, progress)
    text = render_html(data)
    raw = text.encode("utf-8")
    with atomic_path(out) as tmp:
        tmp.write_bytes(raw)
    return Report(out, len(raw), mode, reason, len(data["rows"]), len(data["columns"]),
                  len(data["training"]), len(data["sources"]), g.notes)


def page_data(g: Gathered, page_dir: Path, images: str = "embed", thumb_px: int = THUMB_PX,
              title: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The JSON blob of the page (see the module docstring). ``page_dir``: the folder the
    page will be written to (linked images are relative to it)."""
    from flarecli import __version__

    # previews first, beside the case id: the picture is what a reader scans the rows by
    columns = ([c for c in g.columns if c.kind == "image" and images != "none"]
               + [c for c in g.columns if c.kind != "image"])
    head = {"key": "case", "label": "case", "source": "", "kind": "text", "group": "",
            "visible": True, "unit": False, "digits": 0, "help": "case id"}
    pictures: list[list[str]] = []
    rows = []
    done = 0
    todo = sum(1 for c in g.cases for col in columns
               if col.kind == "image" and col.key in g.cells[c])
    for case in g.cases:
        cells = g.cells[case]
        row: list[Any] = [case]
        for col in columns:
            value = cells.get(col.key)
            if col.kind == "image" and value is not None:
                src = _picture(Path(value), page_dir, images, thumb_px, g)
                if src is None:
                    value = None
                else:
                    pictures.append([*src, _rel(g, Path(value))])
                    value = len(pictures) - 1
                done += 1
                if progress:
                    progress(done, todo)
            row.append(value)
        rows.append(row)
    training = [{"label": run.label, "facts": run.facts,
                 "image": _curves(run, page_dir, images)} for run in g.training]
    return {
        "title": title or f"flare report: {g.folder.resolve().name}",
        "folder": str(g.folder.resolve()),
        "created": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "flare_version": __version__,
        "images": images,
        "columns": [head] + [{"key": c.key, "label": c.label, "source": c.source,
                              "kind": c.kind, "group": c.group, "visible": c.visible,
                              "unit": c.unit, "digits": c.digits, "help": c.help}
                             for c in columns],
        "rows": rows,
        "pictures": pictures,
        "blocks": g.blocks,
        "sources": g.sources,
        "training": training,
        "notes": [list(n) for n in g.notes],
    }


def render_html(data: dict[str, Any]) -> str:
    """The page: the skeleton, the stylesheet, the blob and the script, in one string."""
    # "<" never appears raw inside the blob, so no "</script>" in a case id ends it
    blob = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    blob = blob.replace("<", "\\u003c")
    title = html.escape(data["title"])
    meta = html.escape(f"{data['folder']} -- written {data['created']} by flare "
                       f"{data['flare_version']}; images {data['images']}")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{title}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="meta">{meta}</p>
<nav><a href="#summary">Summary</a><a href="#cases">Cases</a><a href="#details">Sources</a>
<a href="#training">Training runs</a><a href="#notes">Notes</a></nav>
</header>
<section id="summary">
<h2>Summary</h2>
<div class="cards" id="cards"></div>
<div class="worst-strip" id="worst"></div>
</section>
<section id="cases">
<h2>Cases</h2>
<div class="toolbar">
<input id="filter" type="search" autocomplete="off" spellcheck="false"
 placeholder="filter: text, or organ_dsc&lt;0.5, pattern=tumor_only ..." aria-label="filter">
<span id="count"></span>
<details id="columns"><summary>Columns</summary><div id="column-list"></div></details>
<label>rows per page <select id="page-size"><option>50</option><option selected>100</option>
<option>250</option><option>500</option></select></label>
<button type="button" id="export">Export selected (0)</button>
<button type="button" id="clear">Clear selection</button>
</div>
<p class="hint">Click a column to sort (again to reverse; missing values last). The filter
keeps the cases matching every word: text found in the case id or a text column, or
<code>column&lt;value</code>, <code>&gt;</code>, <code>&lt;=</code>, <code>&gt;=</code>,
<code>=</code>, <code>!=</code> with a column's filter name (hover a column's title).
The box at the top of the first column selects every case shown, on all pages.</p>
<div class="table-wrap"><table id="table"><thead></thead><tbody></tbody><tfoot></tfoot></table>
</div>
<div id="pager"><button type="button" id="prev">Previous</button><span id="page-info"></span>
<button type="button" id="next">Next</button></div>
</section>
<section id="details">
<h2>Sources</h2>
<div class="blocks" id="blocks"></div>
<details><summary>Files read</summary><ul id="sources"></ul></details>
</section>
<section id="training">
<h2>Training runs</h2>
<div class="runs" id="runs"></div>
</section>
<section id="notes">
<h2>Notes</h2>
<ul id="note-list"></ul>
</section>
<div class="overlay" id="viewer" hidden><figure><img id="viewer-img" alt="full size">
<figcaption id="viewer-caption"></figcaption></figure>
<button type="button" id="viewer-close">Close (Esc)</button></div>
<div class="overlay" id="export-dialog" hidden><div class="panel">
<h3>Selected cases</h3><p class="hint" id="export-count"></p>
<textarea id="export-text" readonly></textarea>
<div><button type="button" id="export-txt">Download .txt</button>
<button type="button" id="export-csv">Download .csv (shown columns)</button>
<button type="button" id="export-copy">Copy</button>
<button type="button" id="export-close">Close</button></div></div></div>
<script type="application/json" id="flare-data">{blob}</script>
<script>{JS}</script>
</body>
</html>
"""


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a JSON file may hold them: Python writes NaN)
    replaced by None, which the page shows as an empty cell; JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def _preview_paths(g: Gathered) -> list[Path]:
    keys = {c.key for c in g.columns if c.kind == "image"}
    return [Path(v) for cells in g.cells.values() for k, v in cells.items() if k in keys]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _rel(g: Gathered, path: Path) -> str:
    try:
        return path.relative_to(g.folder).as_posix()
    except ValueError:
        return str(path)


def _link(path: Path, page_dir: Path) -> str:
    rel = os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())
    return urllib.parse.quote(Path(rel).as_posix())


def _data_uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _picture(path: Path, page_dir: Path, images: str, thumb_px: int, g: Gathered
             ) -> tuple[str, str] | None:
    """(thumbnail src, full-size src) of a preview, or None (and a note) when it does not
    read as an image."""
    from PIL import Image, UnidentifiedImageError

    if images == "link":
        src = _link(path, page_dir)
        return src, src
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert("RGB")
            height = max(1, round(img.height * thumb_px / img.width))
            if img.width > thumb_px:
                img = img.resize((thumb_px, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        g.notes.append((str(path), f"not a readable image ({e}); no preview"))
        return None
    return _data_uri(buf.getvalue(), "image/jpeg"), _data_uri(raw, "image/png")


def _curves(run, page_dir: Path, images: str) -> str:
    from flarecli.core.report.curves import draw_progress

    if images == "link" and run.progress_png is not None:
        return _link(run.progress_png, page_dir)
    buf = io.BytesIO()
    draw_progress(run.records, title=run.label.rstrip("/")).save(buf, format="PNG")
    return _data_uri(buf.getvalue(), "image/png")

