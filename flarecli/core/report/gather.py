"""What flare's commands wrote under a folder, found by content and gathered per case.

Every ``.json``, ``.jsonl``, ``.csv`` and ``.png`` under the folder (hidden files and
folders left out, links to folders not followed) is looked at, and recognised by what it
holds, whatever its name:

=====================  =======================================================================
kind                   recognised by
=====================  =======================================================================
audit manifest         a JSON object with ``cases`` (a list) and a ``summary`` holding
                       ``organ_full`` (``flare audit --json``; ``RUN/audit.json``)
correction manifest    ``"schema": "flare-correct"`` (``flare correct``)
run record             ``"command": "pseudolabel"`` or ``"infer"`` with ``scans`` (``OUT/
                       pseudolabel.json``, ``OUT/infer.json`` and shard records; one source per
                       folder)
evaluate summary       a JSON object with ``per_class`` and ``organ_dsc`` (``flare evaluate
                       --json``); a ``lesions`` object in it is read when present
statistics             a JSON object with ``min_tumor_mm3`` and ``cases`` whose entries hold
                       ``classes`` (``flare stats --json``, ``flare infer --stats``)
per-case CSV           the header: ``case,label,name,dsc,nsd`` (evaluate), ``case,score,
                       confidence`` (pseudolabel's ``scores.csv``), ``case,label,name,voxels,
                       volume_ml`` (stats)
training run           a ``.jsonl`` file whose lines are objects with ``epoch``
                       (``MODEL/<stage>/metrics.jsonl``), with ``config.json`` and
                       ``progress.png`` beside it
previews               any other PNG: ``<case>.png``; one preview column per folder
=====================  =======================================================================

Anything else (model bundles, recipes, scans) is passed over in silence; a file that
cannot be parsed, or holds a field of another shape, is one note, never a failure. A
pseudolabel ``scores.csv`` beside its run record, and a statistics CSV beside a statistics
JSON of the same name, hold what the JSON holds and are not read twice.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from flarecli.core.errors import InputError
from flarecli.core.labels import LABELS, ORGANS, TUMOR

#: JSON and CSV files larger than this are not read (a note says so).
MAX_TEXT_BYTES = 512 * 2**20
#: How many worst cases each summary lists.
WORST = 5

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVALUATE_CSV = ["case", "label", "name", "dsc", "nsd", "gt_voxels", "pred_voxels", "annotated"]
STATS_CSV = ["case", "label", "name", "voxels", "volume_ml"]


@dataclass
class Column:
    """One column of the case table.

    ``key`` is unique and is the name the page's filter takes (``organ_dsc<0.5``); it ends
    in ``@2``, ``@3``... for the second and later sources of one kind. ``kind`` is ``num``,
    ``text`` or ``image`` (a preview). ``unit``: a 0..1 score where low is bad (coloured,
    and listed among the worst cases). ``digits``: decimals shown.
    """

    key: str
    label: str
    source: str
    kind: str = "num"
    group: str = ""
    visible: bool = True
    unit: bool = False
    digits: int = 2
    help: str = ""


@dataclass
class TrainingRun:
    """A training run folder: its metrics records, facts from ``config.json``, and its
    ``progress.png`` when one was drawn."""

    label: str
    folder: Path
    records: list[dict[str, Any]]
    facts: list[tuple[str, Any]]
    progress_png: Path | None


@dataclass
class Gathered:
    """Everything found under ``folder``: the case table (``columns``; ``cells[case][key]``,
    an image column holding the PNG's path), one summary block per source (JSON-ready dicts:
    ``title``, ``source``, ``suffix``, ``items``, ``tables``, ``worst`` and optionally
    ``cards``, the figures for the top of the page), training runs, ``notes`` (path, why)
    and every file read (``read``)."""

    folder: Path
    columns: list[Column] = field(default_factory=list)
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    training: list[TrainingRun] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    read: list[Path] = field(default_factory=list)

    @property
    def cases(self) -> list[str]:
        return sorted(self.cells)

    def column(self, col: Column) -> Column:
        """Add a column; a key already taken (a CSV column named like one of flare's) gets
        ``_2``, ``_3``... so that no two columns share a filter name."""
        taken = {c.key for c in self.columns}
        key, k = col.key, 1
        while key in taken:
            k += 1
            key = f"{col.key}_{k}"
        col.key = key
        self.columns.append(col)
        return col

    def put(self, case: str, col: Column, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                return
            value = round(value, col.digits + 1)
        self.cells.setdefault(str(case), {})[col.key] = value


@dataclass
class _Found:
    audits: list[tuple[Path, dict]] = field(default_factory=list)
    corrections: list[tuple[Path, dict]] = field(default_factory=list)
    records: dict[tuple[str, Path], list[tuple[Path, dict]]] = field(default_factory=dict)
    summaries: list[tuple[Path, dict]] = field(default_factory=list)
    stats: list[tuple[Path, Any]] = field(default_factory=list)  # JSON dict or CSV rows
    evaluations: list[tuple[Path, list[dict[str, str]], list[str]]] = field(default_factory=list)
    scores: list[tuple[Path, list[dict[str, str]]]] = field(default_factory=list)
    metrics: list[tuple[Path, list[dict], int]] = field(default_factory=list)
    pngs: dict[Path, list[Path]] = field(default_factory=dict)


def gather(folder: Path) -> Gathered:
    """Find and read what flare wrote under ``folder`` (see the module docstring).

    Raises InputError when ``folder`` is not a folder. Files that cannot be parsed become
    notes; finding nothing is not an error here (the caller decides).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder" if not folder.exists() else
                         f"{folder}: is a file, not a folder")
    out = Gathered(folder)
    found = _Found()
    for path in _walk(folder, out):
        _classify(path, found, out)
    _drop_duplicates(found)
    rel = _relative(folder)
    for reader, *args in ((_audits,), (_corrections,), (_run_records, "pseudolabel"),
                          (_pseudo_csvs,), (_run_records, "infer"), (_evaluations,),
                          (_summaries,), (_statistics,), (_previews,), (_training,)):
        _guarded(reader, found, out, rel, *args)
    # a second source of a kind (another evaluation, an older audit) starts hidden: the page
    # lists its columns to show; every preview folder stays in view
    later = {src["source"] for src in out.sources if src["suffix"] and src["kind"] != "previews"}
    for col in out.columns:
        if col.source in later:
            col.visible = False
    return out


#: What a reader raises on a file that looks like flare's but holds a field of another shape.
_CONTENT_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)


def _guarded(reader: Callable[..., None], found: _Found, out: Gathered, rel, *args) -> None:
    """Run one reader; a file it cannot read (a hand-edited or damaged run record, an odd
    field) is a note and left out, and the page is made of the other files. The reader is
    rerun on each of its files alone to find which one it failed on."""
    kept = _snapshot(out)
    try:
        reader(found, out, rel, *args)
        return
    except _CONTENT_ERRORS:
        _restore(out, kept)
    bad = []
    for attr, item, paths in _items(found):
        try:
            reader(_only(found, attr, item), Gathered(out.folder), rel, *args)
        except _CONTENT_ERRORS as e:
            bad.append((attr, item, paths, e))
    for attr, item, paths, e in bad:
        _drop(found, attr, item)
        for path in paths:
            _note(out, path, f"not read: a field of an unexpected shape ({type(e).__name__}: "
                             f"{str(e)[:80]}); left out")
            if path in out.read:
                out.read.remove(path)
    try:
        reader(found, out, rel, *args)
    except _CONTENT_ERRORS as e:  # files that fail only together: leave them all out
        _restore(out, kept)
        _note(out, out.folder, f"some files could not be read together ({type(e).__name__}: "
                               f"{str(e)[:80]}); left out")


def _snapshot(out: Gathered) -> dict[str, Any]:
    """What a reader may change: readers only append to the lists and put cells, never
    change what is there, so copies of the lists and of each case's cells undo them (a
    deep copy took 0.09 s per reader for 5,000 cases of 40 columns, this 0.005 s)."""
    state: dict[str, Any] = {k: list(getattr(out, k)) for k in
                             ("columns", "blocks", "sources", "training", "notes", "read")}
    state["cells"] = {case: dict(row) for case, row in out.cells.items()}
    return state


def _restore(out: Gathered, snapshot: dict[str, Any]) -> None:
    for k, v in snapshot.items():
        setattr(out, k, v)


def _items(found: _Found) -> list[tuple[str, Any, list[Path]]]:
    """Every entry ``found`` holds, as (field, entry, its files): a list's item or a dict's
    key (a run record folder, a preview folder)."""
    items = []
    for f in fields(found):
        held = getattr(found, f.name)
        for item in held:
            if isinstance(held, dict):
                value = held[item]
                paths = [v[0] if isinstance(v, tuple) else v for v in value] or [item]
            else:
                paths = [item[0]]
            items.append((f.name, item, [p for p in paths if isinstance(p, Path)]))
    return items


def _only(found: _Found, attr: str, item: Any) -> _Found:
    held = getattr(found, attr)
    return _Found(**{attr: {item: held[item]} if isinstance(held, dict) else [item]})


def _drop(found: _Found, attr: str, item: Any) -> None:
    held = getattr(found, attr)
    if isinstance(held, dict):
        del held[item]
    else:
        held.remove(item)


# ---------------------------------------------------------------------------------------------
# finding and recognising files
# ---------------------------------------------------------------------------------------------

def _walk(folder: Path, out: Gathered) -> Iterable[Path]:
    def unreadable(e: OSError) -> None:
        _note(out, Path(e.filename or folder), f"folder not searched ({e.strerror or e})")

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith((".json", ".jsonl", ".csv", ".png")):
                yield Path(root) / name


def _relative(folder: Path) -> Callable[[Path], str]:
    def rel(path: Path) -> str:
        try:
            return Path(path).relative_to(folder).as_posix() or "."
        except ValueError:
            return str(path)
    return rel


def _note(out: Gathered, path: Path, message: str) -> None:
    out.notes.append((str(path), message))


def _read_text(path: Path, out: Gathered) -> str | None:
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            _note(out, path, f"larger than {MAX_TEXT_BYTES // 2**20} MB, not read")
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        _note(out, path, f"unreadable ({getattr(e, 'strerror', None) or e})")
        return None


def _classify(path: Path, found: _Found, out: Gathered) -> None:
    suffix = path.suffix.lower()
    if suffix == ".png":
        _classify_png(path, found, out)
        return
    text = _read_text(path, out)
    if text is None:
        return
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            _note(out, path, f"not valid JSON ({e}); left out")
            return
        _classify_json(path, data, found, out)
    elif suffix == ".jsonl":
        _classify_jsonl(path, text, found, out)
    else:
        _classify_csv(path, text, found, out)


def _classify_json(path: Path, data: Any, found: _Found, out: Gathered) -> None:
    if not isinstance(data, dict):
        return
    summary = data.get("summary")
    cases = data.get("cases")
    if isinstance(cases, list) and isinstance(summary, dict) and "organ_full" in summary:
        found.audits.append((path, data))
    elif data.get("schema") == "flare-correct" and isinstance(cases, list):
        found.corrections.append((path, data))
    elif data.get("command") in ("pseudolabel", "infer") and isinstance(data.get("scans"), list):
        found.records.setdefault((data["command"], path.parent), []).append((path, data))
    elif isinstance(data.get("per_class"), dict) and "organ_dsc" in data:
        found.summaries.append((path, data))
    elif "min_tumor_mm3" in data and isinstance(cases, list) and all(
            isinstance(c, dict) and "classes" in c for c in cases):
        found.stats.append((path, data))
    else:
        return
    out.read.append(path)


def _classify_jsonl(path: Path, text: str, found: _Found, out: Gathered) -> None:
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(r, dict):
            records.append(r)
    if records and all("epoch" in r for r in records):
        found.metrics.append((path, records, bad))
        out.read.append(path)
    elif bad and not records:
        _note(out, path, "no line is valid JSON; left out")


def _classify_csv(path: Path, text: str, found: _Found, out: Gathered) -> None:
    try:
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if not header:
            return
        header = [h.strip() for h in header]
        kind = ("evaluate" if header[:5] == EVALUATE_CSV[:5] else
                "scores" if header[:3] == ["case", "score", "confidence"] else
                "stats" if header[:5] == STATS_CSV else None)
        if kind is None:
            return
        rows = [dict(zip(header, row, strict=False)) for row in reader if row]
    except csv.Error as e:
        _note(out, path, f"not a readable CSV ({e}); left out")
        return
    if kind == "evaluate":
        found.evaluations.append((path, rows, header))
    elif kind == "scores":
        found.scores.append((path, rows))
    else:
        found.stats.append((path, rows))
    out.read.append(path)


def _classify_png(path: Path, found: _Found, out: Gathered) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except OSError as e:
        _note(out, path, f"unreadable ({e.strerror or e})")
        return
    if head != PNG_SIGNATURE:
        _note(out, path, "not a PNG file; left out")
        return
    if path.name == "progress.png":
        return  # a training run's picture: found through its metrics.jsonl
    found.pngs.setdefault(path.parent, []).append(path)


def _drop_duplicates(found: _Found) -> None:
    """scores.csv beside its pseudolabel record, stats.csv beside stats.json: the same data."""
    record_dirs = {folder for (command, folder) in found.records if command == "pseudolabel"}
    found.scores = [(p, rows) for p, rows in found.scores if p.parent not in record_dirs]
    json_stems = {p.with_suffix("") for p, data in found.stats if isinstance(data, dict)}
    found.stats = [(p, d) for p, d in found.stats
                   if isinstance(d, dict) or p.with_suffix("") not in json_stems]


# ---------------------------------------------------------------------------------------------
# one kind at a time
# ---------------------------------------------------------------------------------------------

def _suffix(k: int) -> str:
    return "" if k == 0 else f"@{k + 1}"


def _source(out: Gathered, kind: str, label: str, suffix: str, cases: int) -> None:
    out.sources.append({"kind": kind, "source": label, "suffix": suffix, "cases": cases})


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    try:
        f = float(str(v).strip())
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def _worst(out: Gathered, col: Column, caption: str, cases: Iterable[str] | None = None
           ) -> dict[str, Any]:
    pairs = [(c, out.cells[c][col.key]) for c in (cases or out.cells)
             if col.key in out.cells.get(c, {})]
    pairs.sort(key=lambda p: (p[1], p[0]))
    return {"caption": caption, "column": col.key, "cases": pairs[:WORST]}


def _audits(found: _Found, out: Gathered, rel) -> None:
    for k, (path, data) in enumerate(sorted(found.audits)):
        s, label = _suffix(k), rel(path)
        group = f"audit {label}"
        pattern = out.column(Column(f"pattern{s}", "pattern", label, "text", group,
                                    help="label pattern (flare audit)"))
        organs = out.column(Column(f"organs{s}", "organs", label, "text", group,
                                   help="organ labels: full (all 13), partial or none"))
        tumor = out.column(Column(f"tumor_label{s}", "tumor label", label, "text", group,
                                  help="whether the label annotates tumors"))
        classes = out.column(Column(f"classes{s}", "classes", label, "num", group, digits=0,
                                    help="annotated classes"))
        problems = out.column(Column(f"problems{s}", "problems", label, "text", group,
                                     help="integrity problems found by flare audit"))
        cases = [c for c in data["cases"] if isinstance(c, dict) and "id" in c]
        per_organ = {o: [0, 0, 0] for o in ORGANS}
        for c in cases:
            case = str(c["id"])
            out.put(case, pattern, c.get("group"))
            out.put(case, organs, c.get("organ_category"))
            if c.get("labeled"):
                out.put(case, tumor, "yes" if c.get("tumor") else "no")
                annotated = set(c.get("organs") or [])
                for o in ORGANS:
                    full = c.get("organ_category") == "full"
                    per_organ[o][0 if full else 1 if o in annotated else 2] += 1
            out.put(case, classes, _num(c.get("n_classes")))
            out.put(case, problems, "; ".join(map(str, c.get("problems") or [])) or None)
        summary = data["summary"]
        items = [(name, summary.get(key)) for name, key in (
            ("cases", "cases"), ("labelled", "labeled"), ("unlabelled", "unlabeled"),
            ("organs: full (13)", "organ_full"), ("organs: partial", "organ_partial"),
            ("organs: none", "organ_none"), ("tumor annotated", "tumor"),
            ("no tumor", "no_tumor"), ("cases with problems", "problems"))
            if key in summary]
        dataset = (data.get("source") or {}).get("dataset")
        if dataset:
            items.insert(0, ("dataset", dataset))
        groups = summary.get("groups") or {}
        tables = [
            {"caption": "label patterns", "header": ["pattern", "cases"],
             "rows": [[g, n] for g, n in groups.items()]},
            {"caption": "labels per organ (labelled cases)",
             "header": ["organ", "in full cases", "in partial cases", "not annotated"],
             "rows": [[LABELS[o], *per_organ[o]] for o in ORGANS]},
        ]
        problems_found = list(data.get("dataset_problems") or [])
        if problems_found:
            tables.append({"caption": "dataset problems", "header": ["problem"],
                           "rows": [[str(p)] for p in problems_found]})
        cards = [(f"{summary.get('organ_full', 0)} / {summary.get('organ_partial', 0)} / "
                  f"{summary.get('organ_none', 0)}", "organs full / partial / none"),
                 (summary.get("tumor", 0), "tumor annotated"),
                 (summary.get("problems", 0), "cases with problems")]
        out.blocks.append({"title": "audit", "source": label, "suffix": s, "items": items,
                           "tables": tables, "worst": [], "cards": cards})
        _source(out, "audit", label, s, len(cases))


def _corrections(found: _Found, out: Gathered, rel) -> None:
    for k, (path, data) in enumerate(sorted(found.corrections)):
        s, label = _suffix(k), rel(path)
        col = out.column(Column(f"kind{s}", "kind", label, "text", f"correct {label}",
                                help="training kind after flare correct: FL, CPL or PL"))
        cases = [c for c in data["cases"] if isinstance(c, dict) and "id" in c]
        for c in cases:
            out.put(str(c["id"]), col, c.get("kind"))
        summary = data.get("summary") or {}
        items = [(key, summary[key]) for key in ("FL", "CPL", "PL") if key in summary]
        failed = summary.get("failed") or []
        items.append(("failed", len(failed) if isinstance(failed, list) else failed))
        out.blocks.append({"title": "correction manifest", "source": label, "suffix": s,
                           "items": items, "tables": [], "worst": []})
        _source(out, "correct", label, s, len(cases))


def _scan_status(scan: dict) -> str:
    if scan.get("error"):
        return f"error: {scan['error']}"
    if scan.get("rejected"):
        return "below --min-score"
    if scan.get("skipped"):
        return "kept"
    return "written"


def _run_records(found: _Found, out: Gathered, rel, command: str) -> None:
    groups = sorted((folder, recs) for (cmd, folder), recs in found.records.items()
                    if cmd == command)
    for k, (folder, recs) in enumerate(groups):
        s, label = _suffix(k), rel(folder) + "/"
        group = f"{command} {label}"
        scans: dict[str, dict] = {}
        for _, data in sorted(recs, key=lambda pd: (pd[0].name != f"{command}.json", pd[0])):
            for scan in data["scans"]:
                if isinstance(scan, dict) and "case" in scan:
                    scans.setdefault(str(scan["case"]), scan)
        status = out.column(Column(f"{'pl' if command == 'pseudolabel' else 'infer'}_status{s}",
                                   "status", label, "text", group,
                                   help=f"what {command} did with the case"))
        if command == "pseudolabel":
            score = out.column(Column(f"score{s}", "quality", label, "num", group, unit=True,
                                      digits=3, help="pseudo-label quality score: confidence "
                                      "x TTA agreement"))
            conf = out.column(Column(f"confidence{s}", "confidence", label, "num", group,
                                     visible=False, unit=True, digits=3))
            agree = out.column(Column(f"agreement{s}", "agreement", label, "num", group,
                                      visible=False, unit=True, digits=3))
            volumes = _volume_columns(out, "pl", s, label, f"{group}: predicted volumes")
        else:
            seconds = out.column(Column(f"infer_s{s}", "infer s", label, "num", group,
                                        digits=2, help="seconds to segment the scan"))
        for case, scan in scans.items():
            out.put(case, status, _scan_status(scan))
            if command == "pseudolabel":
                conf_v = _num(scan.get("confidence"))
                agree_v = _num(scan.get("agreement"))
                score_v = _num(scan.get("score"))
                if score_v is None and conf_v is not None:
                    score_v = conf_v * (agree_v if agree_v is not None else 1.0)
                out.put(case, score, score_v)
                out.put(case, conf, conf_v)
                out.put(case, agree, agree_v)
                for organ, ml in (scan.get("volumes_ml") or {}).items():
                    if str(organ) in volumes:
                        out.put(case, volumes[str(organ)], _num(ml))
            else:
                out.put(case, seconds, _num((scan.get("seconds") or {}).get("total")))
        first = recs[0][1]
        errors = sum(1 for sc in scans.values() if sc.get("error"))
        items: list[tuple[str, Any]] = [
            ("model", first.get("model")), ("recipe", first.get("recipe")),
            ("graph", first.get("graph")), ("device", first.get("device")),
            ("backends", ", ".join(f"{stage}: {b.get('backend')} {b.get('precision')}"
                                   for stage, b in (first.get("backends") or {}).items()
                                   if isinstance(b, dict)) or None),
            ("input", first.get("input")), ("scans", len(scans)), ("errors", errors)]
        worst = []
        if command == "pseudolabel":
            values = [out.cells[c][score.key] for c in scans if score.key in out.cells.get(c, {})]
            items += [("TTA", first.get("tta")),
                      ("mean quality", round(sum(values) / len(values), 4) if values else None),
                      ("below --min-score", sum(1 for sc in scans.values()
                                                if sc.get("rejected")))]
            worst.append(_worst(out, score, "lowest quality scores", scans))
        else:
            values = [out.cells[c][seconds.key] for c in scans
                      if seconds.key in out.cells.get(c, {})]
            items.append(("mean seconds per scan",
                          round(sum(values) / len(values), 3) if values else None))
        out.blocks.append({"title": f"{command} run record", "source": label, "suffix": s,
                           "items": [(a, b) for a, b in items if b is not None],
                           "tables": [], "worst": worst})
        _source(out, command, label, s, len(scans))


def _volume_columns(out: Gathered, prefix: str, s: str, label: str, group: str,
                    classes: Iterable[int] = ORGANS) -> dict[str, Column]:
    return {str(c): out.column(Column(f"{prefix}_{LABELS[c]}_ml{s}", f"{LABELS[c]} ml",
                                      label, "num", group, visible=False, digits=1))
            for c in classes}


def _pseudo_csvs(found: _Found, out: Gathered, rel) -> None:
    offset = sum(1 for cmd, _ in found.records if cmd == "pseudolabel")
    for k, (path, rows) in enumerate(sorted(found.scores, key=lambda pr: pr[0])):
        s, label = _suffix(k + offset), rel(path)
        group = f"pseudolabel {label}"
        score = out.column(Column(f"score{s}", "quality", label, "num", group, unit=True,
                                  digits=3, help="pseudo-label quality score"))
        written = out.column(Column(f"pl_written{s}", "written", label, "text", group))
        volumes = _volume_columns(out, "pl", s, label, f"{group}: predicted volumes")
        cases = []
        for row in rows:
            case = row.get("case")
            if not case:
                continue
            cases.append(case)
            out.put(case, score, _num(row.get("score")))
            out.put(case, written, {"1": "yes", "0": "no"}.get(row.get("written", "")))
            for organ, col in volumes.items():
                out.put(case, col, _num(row.get(f"volume_ml_{organ}")))
        out.blocks.append({"title": "pseudolabel scores", "source": label, "suffix": s,
                           "items": [("cases", len(cases))], "tables": [],
                           "worst": [_worst(out, score, "lowest quality scores", cases)]})
        _source(out, "pseudolabel", label, s, len(cases))


def _evaluations(found: _Found, out: Gathered, rel) -> None:
    for k, (path, rows, header) in enumerate(sorted(found.evaluations, key=lambda e: e[0])):
        s, label = _suffix(k), rel(path)
        group = f"evaluate {label}"
        organ_dsc = out.column(Column(f"organ_dsc{s}", "organ DSC", label, "num", group,
                                      unit=True, digits=4, help="mean DSC of the case's "
                                      "scored organs"))
        organ_nsd = out.column(Column(f"organ_nsd{s}", "organ NSD", label, "num", group,
                                      unit=True, digits=4))
        tumor_dsc = out.column(Column(f"tumor_dsc{s}", "tumor DSC", label, "num", group,
                                      unit=True, digits=4))
        tumor_nsd = out.column(Column(f"tumor_nsd{s}", "tumor NSD", label, "num", group,
                                      unit=True, digits=4, visible=False))
        per_class = {}
        for metric in ("dsc", "nsd"):
            for c in ORGANS:
                per_class[metric, c] = out.column(Column(
                    f"{metric}_{LABELS[c]}{s}", f"{LABELS[c]} {metric.upper()}", label, "num",
                    f"{group}: {metric.upper()} per class", visible=False, unit=True,
                    digits=4))
        extra = [h for h in header if h not in EVALUATE_CSV]
        extra_cols = {h: out.column(Column(f"{h}{s}", h.replace("_", " "), label, "num",
                                           group, digits=2)) for h in extra}
        by_case: dict[str, dict[int, dict[str, str]]] = {}
        for row in rows:
            try:
                c = int(row.get("label", ""))
            except ValueError:
                continue
            by_case.setdefault(row.get("case", ""), {})[c] = row
        for case, classes in by_case.items():
            if not case:
                continue
            scored: dict[tuple[str, int], float | None] = {}
            for c, row in classes.items():
                annotated = row.get("annotated", "1") != "0"
                for metric in ("dsc", "nsd"):
                    scored[metric, c] = _num(row.get(metric)) if annotated else None
                    if (metric, c) in per_class:
                        out.put(case, per_class[metric, c], scored[metric, c])
            out.put(case, organ_dsc, _mean(scored.get(("dsc", c)) for c in ORGANS))
            out.put(case, organ_nsd, _mean(scored.get(("nsd", c)) for c in ORGANS))
            out.put(case, tumor_dsc, scored.get(("dsc", TUMOR)))
            out.put(case, tumor_nsd, scored.get(("nsd", TUMOR)))
            for h, col in extra_cols.items():
                ordered = [classes[TUMOR]] if TUMOR in classes else []
                ordered += [classes[c] for c in sorted(classes)]
                for row in ordered:
                    value = row.get(h, "")
                    if value not in ("", None):
                        number = _num(value)
                        if number is None:
                            col.kind = "text"
                        out.put(case, col, number if number is not None else value)
                        break
        cases = [c for c in by_case if c]
        out.blocks.append({"title": "evaluate (per case)", "source": label, "suffix": s,
                           "items": [("cases", len(cases))], "tables": [],
                           "worst": [_worst(out, organ_dsc, "lowest organ DSC", cases),
                                     _worst(out, tumor_dsc, "lowest tumor DSC", cases)]})
        _source(out, "evaluate", label, s, len(cases))


def _summaries(found: _Found, out: Gathered, rel) -> None:
    for k, (path, data) in enumerate(sorted(found.summaries, key=lambda e: e[0])):
        s, label = _suffix(k), rel(path)
        items: list[tuple[str, Any]] = [
            (name, data.get(key)) for name, key in (
                ("protocol", "protocol"), ("NSD threshold", "nsd_threshold"),
                ("cases", "cases"), ("scored", "scored_cases"), ("organ DSC", "organ_dsc"),
                ("organ NSD", "organ_nsd"), ("tumor DSC", "tumor_dsc"),
                ("tumor NSD", "tumor_nsd"))
            if key in data]
        for key, name in (("failed_cases", "failed cases"),
                          ("missing_predictions", "missing predictions")):
            value = data.get(key)
            if isinstance(value, list):
                items.append((name, ", ".join(map(str, value)) if value else 0))
        rows = []
        for cid, entry in sorted(data["per_class"].items(), key=lambda kv: _class_order(kv[0])):
            if isinstance(entry, dict):
                rows.append([entry.get("name", cid), *(_round(entry.get(m)) for m in
                                                       ("dsc", "dsc_std", "nsd", "nsd_std")),
                             entry.get("n")])
        tables = [{"caption": "per class (mean over cases)",
                   "header": ["class", "DSC", "std", "NSD", "std", "n"], "rows": rows}]
        lesions = data.get("lesions")
        if lesions is not None:
            lesion_items, lesion_tables = _lesion_summary(out, lesions, label, s)
            items += lesion_items
            tables += lesion_tables
        cards = [(f"{data[key]:.3f}", name) for key, name in (
            ("organ_dsc", "organ DSC, mean of the class means"), ("tumor_dsc", "tumor DSC"))
            if isinstance(data.get(key), (int, float))]
        out.blocks.append({"title": "evaluate summary", "source": label, "suffix": s,
                           "items": [(a, _round(b)) for a, b in items], "tables": tables,
                           "worst": [], "cards": cards})
        _source(out, "evaluate summary", label, s, 0)


def _class_order(key: str) -> tuple[int, str]:
    try:
        return int(key), ""
    except ValueError:
        return 10**6, key


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else (
        None if isinstance(v, float) else v)


def _lesion_summary(out: Gathered, lesions: Any, label: str, s: str
                    ) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The lesion-wise figures of an evaluate summary, whatever their exact layout: scalars
    become items ("lesions: KEY"), objects of scalars a table, and a list of per-case
    objects (with ``case`` or ``id``) -- or an object of them under ``cases`` -- columns."""
    items: list[tuple[str, Any]] = []
    tables: list[dict[str, Any]] = []
    if not isinstance(lesions, dict):
        return [("lesions", lesions if isinstance(lesions, (int, float, str)) else "present")], []
    for key, value in lesions.items():
        if isinstance(value, (int, float, str)) or value is None:
            items.append((f"lesions: {key}", value))
        elif isinstance(value, dict) and all(isinstance(v, (int, float, str)) or v is None
                                             for v in value.values()):
            tables.append({"caption": f"lesions: {key}", "header": ["", "value"],
                           "rows": [[k, _round(v)] for k, v in value.items()]})
        elif key in ("cases", "per_case"):
            if isinstance(value, dict):  # case -> figures
                value = [{"case": c, **v} for c, v in value.items() if isinstance(v, dict)]
            _lesion_columns(out, value, label, s)
    return items, tables


def _lesion_columns(out: Gathered, entries: Any, label: str, s: str) -> None:
    if not isinstance(entries, list):
        return
    cols: dict[str, Column] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        case = entry.get("case", entry.get("id"))
        if case is None:
            continue
        for key, value in entry.items():
            if key in ("case", "id") or not isinstance(value, (int, float)) or isinstance(
                    value, bool):
                continue
            if key not in cols:
                cols[key] = out.column(Column(f"lesion_{key}{s}", f"lesions {key}", label,
                                              "num", f"evaluate {label}: lesions", digits=2))
            out.put(str(case), cols[key], _num(value))


def _statistics(found: _Found, out: Gathered, rel) -> None:
    for k, (path, data) in enumerate(sorted(found.stats, key=lambda e: e[0])):
        s, label = _suffix(k), rel(path)
        group = f"stats {label}"
        count = out.column(Column(f"lesions{s}", "lesions", label, "num", group, digits=0,
                                  help="tumor lesions (flare stats)"))
        burden = out.column(Column(f"tumor_burden_ml{s}", "tumor burden ml", label, "num",
                                   group, digits=2, help="total tumor volume"))
        axes = out.column(Column(f"sum_long_axes_mm{s}", "sum of long axes mm", label, "num",
                                 group, digits=1, visible=False))
        volumes = _volume_columns(out, "vol", s, label, f"{group}: volumes",
                                  (*ORGANS, TUMOR))
        cases: list[str] = []
        if isinstance(data, dict):
            for c in data["cases"]:
                case = str(c.get("id", ""))
                if not case:
                    continue
                cases.append(case)
                out.put(case, count, _num(c.get("lesion_count")))
                out.put(case, burden, _num(c.get("tumor_burden_ml")))
                out.put(case, axes, _num(c.get("sum_long_axes_mm")))
                for cid, entry in (c.get("classes") or {}).items():
                    if str(cid) in volumes and isinstance(entry, dict):
                        out.put(case, volumes[str(cid)], _num(entry.get("volume_ml")))
        else:
            for row in data:
                case = row.get("case")
                if not case:
                    continue
                if case not in cases:
                    cases.append(case)
                    out.put(case, count, 0.0)
                    out.put(case, burden, 0.0)
                    out.put(case, axes, 0.0)
                if row.get("label") in volumes:
                    out.put(case, volumes[row["label"]], _num(row.get("volume_ml")))
                if row.get("lesion_count"):
                    out.put(case, count, _num(row.get("lesion_count")))
                    out.put(case, burden, _num(row.get("tumor_burden_ml")))
                    out.put(case, axes, _num(row.get("sum_long_axes_mm")))
        lesions = [out.cells.get(c, {}).get(count.key) or 0 for c in cases]
        burdens = [out.cells.get(c, {}).get(burden.key) or 0 for c in cases]
        items: list[tuple[str, Any]] = [("cases", len(cases)), ("lesions", int(sum(lesions))),
                                        ("cases with lesions", sum(1 for n in lesions if n))]
        if burdens:
            items.append(("mean tumor burden ml", round(sum(burdens) / len(burdens), 2)))
        if isinstance(data, dict):
            items.append(("smallest lesion counted mm^3", data.get("min_tumor_mm3")))
        out.blocks.append({"title": "statistics", "source": label, "suffix": s, "items": items,
                           "tables": [], "worst": [],
                           "cards": [(int(sum(lesions)), "tumor lesions")]})
        _source(out, "stats", label, s, len(cases))


def _previews(found: _Found, out: Gathered, rel) -> None:
    for k, (folder, pngs) in enumerate(sorted(found.pngs.items())):
        s, label = _suffix(k), rel(folder) + "/"
        col = out.column(Column(f"preview{s}", "preview", label, "image", f"previews {label}",
                                help="click to open full size"))
        for png in pngs:
            out.put(png.stem, col, png)
            out.read.append(png)
        _source(out, "previews", label, s, len(pngs))


def _training(found: _Found, out: Gathered, rel) -> None:
    for path, records, bad in sorted(found.metrics, key=lambda m: m[0]):
        folder = path.parent
        label = rel(folder) + "/"
        if bad:
            _note(out, path, f"{bad} line(s) that are not JSON skipped")
        facts: list[tuple[str, Any]] = []
        config = folder / "config.json"
        if config.is_file():
            text = _read_text(config, out)
            try:
                cfg = json.loads(text) if text is not None else None
            except ValueError as e:
                cfg = None
                _note(out, config, f"not valid JSON ({e}); left out")
            if isinstance(cfg, dict):
                out.read.append(config)
                facts += [(name, cfg.get(key)) for name, key in (
                    ("recipe", "recipe"), ("preset", "preset"), ("stage", "stage_name"))
                    if cfg.get(key) is not None]
        facts.append(("epochs", len(records)))
        chosen = None
        for i, r in enumerate(records):
            if r.get("best") is True:
                chosen = i
        if chosen is not None:
            r = records[chosen]
            where = f"{r.get('epoch')}" + (f" (phase {r['phase']})" if "phase" in r else "")
            facts.append(("selected epoch", where))
            if _num(r.get("val_mean")) is not None:
                facts.append(("its val_mean", round(float(r["val_mean"]), 4)))
        seconds = [_num(r.get("seconds")) for r in records]
        if any(v is not None for v in seconds):
            facts.append(("training seconds", round(sum(v or 0.0 for v in seconds), 1)))
        last = _num(records[-1].get("loss")) if records else None
        if last is not None:
            facts.append(("last loss", round(last, 4)))
        png = folder / "progress.png"
        out.training.append(TrainingRun(label, folder, records, facts,
                                        png if png.is_file() else None))
