"""The report page's stylesheet and script, inlined into every page.

Kept as Python strings rather than files beside the module: the project declares no package
data, so a ``.css`` or ``.js`` file here would be missing from a wheel. The script is plain
ES2017 without any library; it reads the one JSON blob (``#flare-data``, laid out in
:mod:`flarecli.core.report.page`) and renders only the rows of the current page, so 5,000
cases cost one sort and one filter pass over arrays, never 5,000 table rows.
"""

CSS = r"""
:root { --fg: #1d1d1f; --muted: #666; --line: #d9d9de; --head: #f4f4f6; --accent: #0b63c5; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; padding: 0 24px 40px; background: #fff; }
header { padding: 18px 0 6px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0 0 2px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.meta, .src, .hint { color: var(--muted); font-size: 12px; margin: 0 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 130px; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); font-size: 12px; }
.blocks { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
          gap: 14px; }
.block { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow: auto; }
.block dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 6px 0; }
.block dt { color: var(--muted); }
.block dd { margin: 0; word-break: break-all; }
.block table { border-collapse: collapse; margin: 4px 0 8px; font-size: 12px; }
.block details summary { cursor: pointer; color: var(--muted); }
.block th, .block td { border-bottom: 1px solid var(--line); padding: 1px 8px 1px 0;
                       text-align: right; }
.block th:first-child, .block td:first-child { text-align: left; }
.worst-strip { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 6px; }
.worst { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
.worst .src { margin: 0; }
.worst ol { margin: 4px 0 0; padding-left: 20px; }
.worst button { background: none; border: 0; padding: 0; color: var(--accent);
                cursor: pointer; font: inherit; text-decoration: underline; }
.toolbar { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin-bottom: 4px; }
#filter { width: 380px; padding: 5px 8px; font: inherit; border: 1px solid #aaa;
          border-radius: 4px; }
#columns { position: relative; }
#columns > div { position: absolute; z-index: 5; background: #fff; border: 1px solid var(--line);
                 padding: 8px 12px; max-height: 420px; overflow: auto; width: 520px;
                 box-shadow: 0 4px 16px rgba(0,0,0,.15); }
#columns fieldset { border: 0; padding: 0; margin: 0 0 8px; }
#columns legend { font-weight: 600; }
#columns label { display: inline-block; margin-right: 10px; white-space: nowrap; }
.table-wrap { overflow: auto; max-height: 78vh; border: 1px solid var(--line); }
#table { border-collapse: collapse; font-size: 13px; width: max-content; min-width: 100%; }
#table th, #table td { border-bottom: 1px solid var(--line); padding: 3px 8px;
                       white-space: nowrap; }
#table thead { position: sticky; top: 0; z-index: 2; }
#table thead th { background: var(--head); text-align: left; }
#table thead tr.groups th { font-weight: 400; color: var(--muted); font-size: 12px;
                            border-left: 1px solid var(--line); white-space: normal; }
#table thead th button { background: none; border: 0; font: inherit; font-weight: 600;
                         cursor: pointer; padding: 0; color: var(--fg); }
#table thead th[aria-sort="ascending"] button::after { content: " \25B2"; }
#table thead th[aria-sort="descending"] button::after { content: " \25BC"; }
#table td.num { text-align: right; font-variant-numeric: tabular-nums; }
#table tfoot td { background: var(--head); font-style: italic; }
#table tbody tr:hover { background: #f6f9ff; }
#table tbody tr.selected { background: #eaf2ff; }
.thumb { border: 0; padding: 0; background: none; cursor: zoom-in; display: block; }
.thumb img { height: 56px; display: block; }
#pager { margin-top: 6px; display: flex; gap: 10px; align-items: center; }
.runs { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 16px; }
.run { border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
.run img { width: 100%; cursor: zoom-in; }
.overlay { position: fixed; inset: 0; background: rgba(0,0,0,.78); z-index: 10;
           display: flex; align-items: center; justify-content: center; flex-direction: column; }
.overlay[hidden] { display: none; }
.overlay figure { margin: 0; max-width: 96vw; max-height: 88vh; text-align: center; }
.overlay img { max-width: 96vw; max-height: 82vh; background: #000; }
.overlay figcaption { color: #eee; margin-top: 6px; }
.overlay .panel { background: #fff; padding: 16px; border-radius: 8px; width: min(640px, 94vw); }
.overlay textarea { width: 100%; height: 260px; font: 12px/1.4 ui-monospace, monospace; }
.overlay button { margin: 8px 8px 0 0; }
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("flare-data").textContent);
  var cols = data.columns, rows = data.rows, pics = data.pictures;
  var byKey = {};
  cols.forEach(function (c, i) { byKey[c.key.toLowerCase()] = i; });
  var textCols = [];
  cols.forEach(function (c, i) { if (c.kind === "text") textCols.push(i); });
  var state = {sort: null, dir: 1, terms: [], order: null, shown: [], page: 0, size: 100,
               selected: new Set(), visible: cols.map(function (c) { return c.visible; })};

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child == null) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }
  function fmt(v, c) {
    if (v == null) return "";
    if (c.kind === "num" && typeof v === "number") return v.toFixed(c.digits);
    return String(v);
  }
  function shade(v) {
    var x = Math.max(0, Math.min(1, v));
    return "hsl(" + Math.round(x * 120) + ", 70%, 86%)";
  }
  function plain(v) { return v == null ? "" : typeof v === "number" ? String(v) : v; }

  // ---------------------------------------------------------------- summary
  function renderSummary() {
    var cards = $("cards");
    function card(value, label) { cards.appendChild(el("div", {cls: "card"}, el("b", {text: value}),
                                                      el("span", {text: label}))); }
    card(String(rows.length), "cases");
    cols.forEach(function (c, i) {
      if (!(c.unit && c.visible)) return;
      var sum = 0, n = 0;
      rows.forEach(function (r) { if (typeof r[i] === "number") { sum += r[i]; n++; } });
      if (n) card((sum / n).toFixed(3), "mean " + c.label + " (" + n + " cases)");
    });
    data.blocks.forEach(function (b) {
      (b.cards || []).forEach(function (c) { card(plain(c[0]), c[1] + " (" + b.source + ")"); });
    });
    card(String(data.training.length), "training runs");
    if (data.notes.length) card(String(data.notes.length), "notes");
    var worst = $("worst");
    data.blocks.forEach(function (b) {
      b.worst.forEach(function (w) {
        if (!w.cases.length) return;
        var ol = el("ol");
        w.cases.forEach(function (cv) {
          var b2 = el("button", {type: "button", text: cv[0], title: "show this case"});
          b2.addEventListener("click", function () { showCase(cv[0]); });
          ol.appendChild(el("li", null, b2, " " + plain(cv[1])));
        });
        worst.appendChild(el("div", {cls: "worst"}, el("strong", {text: w.caption}),
                             el("p", {cls: "src", text: b.source}), ol));
      });
    });
    var blocks = $("blocks");
    data.blocks.forEach(function (b) {
      var box = el("div", {cls: "block"}, el("h3", {text: b.title}),
                   el("p", {cls: "src",
                            text: b.source + (b.suffix ? "  (columns " + b.suffix + ")" : "")}));
      if (b.items.length) {
        var dl = el("dl");
        b.items.forEach(function (kv) { dl.appendChild(el("dt", {text: kv[0]}));
                                        dl.appendChild(el("dd", {text: plain(kv[1])})); });
        box.appendChild(dl);
      }
      b.tables.forEach(function (t) {
        // folded: the block's items stay in view, the table is one click away
        var table = el("table");
        var tr = el("tr");
        t.header.forEach(function (h) { tr.appendChild(el("th", {text: h})); });
        table.appendChild(el("thead", null, tr));
        var body = el("tbody");
        t.rows.forEach(function (r) {
          var row = el("tr");
          r.forEach(function (v) { row.appendChild(el("td", {text: plain(v)})); });
          body.appendChild(row);
        });
        table.appendChild(body);
        box.appendChild(el("details", null, el("summary", {text: t.caption}), table));
      });
      blocks.appendChild(box);
    });
    var src = $("sources");
    data.sources.forEach(function (s) {
      src.appendChild(el("li", null, el("code", {text: s.source}),
                         " " + s.kind + (s.cases ? ", " + s.cases + " cases" : "") +
                         (s.suffix ? ", columns " + s.suffix : "")));
    });
  }

  function showCase(id) {
    $("filter").value = "case=" + id;
    applyFilter();
    $("cases").scrollIntoView();
  }

  // ---------------------------------------------------------------- table
  var OP = /^([^<>=!]+)(<=|>=|!=|<|>|=)(.*)$/;
  function parse(text) {
    return text.trim().split(/\s+/).filter(Boolean).map(function (term) {
      var m = term.match(OP);
      if (m && byKey[m[1].toLowerCase()] !== undefined)
        return {col: byKey[m[1].toLowerCase()], op: m[2], value: m[3]};
      return {text: term.toLowerCase()};
    });
  }
  function compare(a, op, b) {
    switch (op) {
      case "<": return a < b; case ">": return a > b; case "<=": return a <= b;
      case ">=": return a >= b; case "=": return a === b; default: return a !== b;
    }
  }
  function matches(row, t) {
    if (t.text !== undefined) {
      if (String(row[0]).toLowerCase().indexOf(t.text) >= 0) return true;
      for (var k = 0; k < textCols.length; k++) {
        var v = row[textCols[k]];
        if (v != null && String(v).toLowerCase().indexOf(t.text) >= 0) return true;
      }
      return false;
    }
    var value = row[t.col], c = cols[t.col];
    if (c.kind === "num") {
      var x = parseFloat(t.value);
      if (isNaN(x)) return false;
      if (typeof value !== "number") return t.op === "!=";
      return compare(value, t.op, x);
    }
    var a = value == null ? "" : String(value).toLowerCase(), b = t.value.toLowerCase();
    return compare(a, t.op, b);
  }
  function sortOrder() {
    var order = rows.map(function (_, i) { return i; });
    if (state.sort === null) return order;
    var k = state.sort, dir = state.dir, num = cols[k].kind !== "text";
    order.sort(function (i, j) {
      var a = rows[i][k], b = rows[j][k];
      var an = a == null, bn = b == null;
      if (an || bn) return an === bn ? i - j : an ? 1 : -1;  // missing values last
      var d = num ? a - b : String(a).localeCompare(String(b));
      return d ? d * dir : i - j;
    });
    return order;
  }
  function refresh(resort) {
    if (resort || !state.order) state.order = sortOrder();
    var terms = state.terms;
    state.shown = terms.length ? state.order.filter(function (i) {
      return terms.every(function (t) { return matches(rows[i], t); });
    }) : state.order.slice();
    var pages = Math.max(1, Math.ceil(state.shown.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    render();
  }
  function applyFilter() {
    state.terms = parse($("filter").value);
    state.page = 0;
    refresh(false);
  }
  function groups() {
    // one cell over each run of shown columns from the same source and group
    var tr = el("tr", {cls: "groups"}), last = null, th = null;
    tr.appendChild(el("th", {colspan: "2"}));
    cols.forEach(function (c, i) {
      if (!state.visible[i] || i === 0) return;
      if (th && c.group === last) { th.colSpan += 1; return; }
      last = c.group;
      th = el("th", {text: c.group, title: c.group});
      th.colSpan = 1;
      tr.appendChild(th);
    });
    return tr;
  }
  function header() {
    var tr = el("tr");
    var all = el("input", {type: "checkbox", title: "select every case shown (all pages)",
                           "aria-label": "select all shown"});
    all.checked = state.shown.length > 0 && state.shown.every(function (i) {
      return state.selected.has(rows[i][0]); });
    all.addEventListener("change", function () {
      state.shown.forEach(function (i) {
        if (all.checked) state.selected.add(rows[i][0]); else state.selected.delete(rows[i][0]);
      });
      render();
    });
    tr.appendChild(el("th", null, all));
    cols.forEach(function (c, i) {
      if (!state.visible[i]) return;
      var about = [c.help, c.source, i ? "filter name: " + c.key : ""].filter(Boolean);
      var th = el("th", {title: about.join(" -- "), "data-key": c.key});
      if (state.sort === i)
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      if (c.kind === "image") th.appendChild(document.createTextNode(c.label));
      else {
        var b = el("button", {type: "button", text: c.label});
        b.addEventListener("click", function () {
          if (state.sort === i) state.dir = -state.dir; else { state.sort = i; state.dir = 1; }
          refresh(true);
        });
        th.appendChild(b);
      }
      tr.appendChild(th);
    });
    return tr;
  }
  function cell(row, c, i) {
    var v = row[i];
    if (c.kind === "image") {
      var td = el("td");
      if (v != null) {
        var p = pics[v];
        var b = el("button", {type: "button", cls: "thumb", "data-pic": String(v),
                              title: "open full size"},
                   el("img", {src: p[0], alt: "preview of " + row[0], loading: "lazy"}));
        td.appendChild(b);
      }
      return td;
    }
    var td2 = el("td", {text: fmt(v, c), cls: c.kind === "num" ? "num" : ""});
    if (c.unit && typeof v === "number") td2.style.background = shade(v);
    return td2;
  }
  function render() {
    var table = $("table");
    var thead = table.tHead;
    thead.replaceChildren(groups(), header());
    var body = el("tbody");
    var start = state.page * state.size, stop = Math.min(state.shown.length, start + state.size);
    for (var n = start; n < stop; n++) {
      var row = rows[state.shown[n]];
      var tr = el("tr", {"data-case": row[0]});
      var box = el("input", {type: "checkbox", "aria-label": "select " + row[0],
                             "data-case": row[0]});
      box.checked = state.selected.has(row[0]);
      if (box.checked) tr.className = "selected";
      tr.appendChild(el("td", null, box));
      for (var i = 0; i < cols.length; i++)
        if (state.visible[i]) tr.appendChild(cell(row, cols[i], i));
      body.appendChild(tr);
    }
    table.replaceChild(body, table.tBodies[0]);
    var foot = el("tr", null, el("td"));
    cols.forEach(function (c, i) {
      if (!state.visible[i]) return;
      if (i === 0) { foot.appendChild(el("td", {text: "mean of " + state.shown.length})); return; }
      var sum = 0, k = 0;
      if (c.kind === "num") state.shown.forEach(function (r) {
        var v = rows[r][i]; if (typeof v === "number") { sum += v; k++; } });
      foot.appendChild(el("td", {cls: "num", text: k ? (sum / k).toFixed(c.digits) : ""}));
    });
    table.tFoot.replaceChildren(foot);
    var pages = Math.max(1, Math.ceil(state.shown.length / state.size));
    $("count").textContent = state.shown.length + " of " + rows.length + " cases";
    $("page-info").textContent = state.shown.length ? "rows " + (start + 1) + "-" + stop +
      ", page " + (state.page + 1) + " of " + pages : "no case matches";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    $("export").textContent = "Export selected (" + state.selected.size + ")";
  }
  function columnChooser() {
    var box = $("column-list"), groups = {};
    cols.forEach(function (c, i) {
      if (i === 0) return;
      var g = c.group || c.source;
      if (!groups[g]) {
        groups[g] = el("fieldset", null, el("legend", {text: g}));
        box.appendChild(groups[g]);
      }
      var input = el("input", {type: "checkbox", "data-col": c.key});
      input.checked = state.visible[i];
      input.addEventListener("change", function () { state.visible[i] = input.checked; render(); });
      groups[g].appendChild(el("label", null, input, " " + c.label));
    });
  }

  // ---------------------------------------------------------------- viewer and export
  function openViewer(src, caption) {
    $("viewer-img").src = src;
    $("viewer-caption").textContent = caption;
    $("viewer").hidden = false;
    $("viewer-close").focus();
  }
  function closeOverlays() { $("viewer").hidden = true; $("export-dialog").hidden = true; }
  function csvField(v) {
    var s = v == null ? "" : String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function selectedRows() {
    var order = state.order || sortOrder();
    return order.filter(function (i) { return state.selected.has(rows[i][0]); });
  }
  function idsText() {
    return selectedRows().map(function (i) { return rows[i][0]; }).join("\n") + "\n";
  }
  function csvText() {
    var keep = cols.map(function (c, i) { return i; }).filter(function (i) {
      return i === 0 || (state.visible[i] && cols[i].kind !== "image"); });
    var lines = [keep.map(function (i) { return csvField(i ? cols[i].key : "case"); }).join(",")];
    selectedRows().forEach(function (r) {
      lines.push(keep.map(function (i) { return csvField(rows[r][i]); }).join(","));
    });
    return lines.join("\n") + "\n";
  }
  function download(name, text, type) {
    var url = URL.createObjectURL(new Blob([text], {type: type}));
    var a = el("a", {href: url, download: name});
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 0);
  }

  function wire() {
    var timer = null;
    $("filter").addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(applyFilter, 120); });
    $("filter").addEventListener("keydown", function (e) {
      if (e.key === "Enter") { clearTimeout(timer); applyFilter(); } });
    $("page-size").addEventListener("change", function () {
      state.size = parseInt($("page-size").value, 10); state.page = 0; render(); });
    $("prev").addEventListener("click", function () { state.page--; render(); });
    $("next").addEventListener("click", function () { state.page++; render(); });
    $("table").addEventListener("change", function (e) {
      var t = e.target;
      if (t.tagName === "INPUT" && t.hasAttribute("data-case")) {
        var id = t.getAttribute("data-case");
        if (t.checked) state.selected.add(id); else state.selected.delete(id);
        t.closest("tr").className = t.checked ? "selected" : "";
        $("export").textContent = "Export selected (" + state.selected.size + ")";
      }
    });
    $("table").addEventListener("click", function (e) {
      var b = e.target.closest(".thumb");
      if (!b) return;
      var p = pics[parseInt(b.getAttribute("data-pic"), 10)];
      openViewer(p[1], p[2]);
    });
    $("runs").addEventListener("click", function (e) {
      var img = e.target.closest("img");
      if (img) openViewer(img.src, img.alt);
    });
    $("viewer").addEventListener("click", function (e) {
      if (e.target.id !== "viewer-img") closeOverlays(); });
    $("clear").addEventListener("click", function () { state.selected.clear(); render(); });
    $("export").addEventListener("click", function () {
      $("export-text").value = idsText();
      $("export-count").textContent = state.selected.size + " case ids, one per line";
      $("export-dialog").hidden = false;
    });
    $("export-txt").addEventListener("click", function () {
      download("flare-cases.txt", idsText(), "text/plain"); });
    $("export-csv").addEventListener("click", function () {
      download("flare-cases.csv", csvText(), "text/csv"); });
    $("export-copy").addEventListener("click", function () {
      var t = $("export-text"); t.select();
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(t.value);
      else document.execCommand("copy");
    });
    $("export-close").addEventListener("click", closeOverlays);
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeOverlays(); });
  }

  function renderTraining() {
    var box = $("runs");
    if (!data.training.length)
      box.appendChild(el("p", {cls: "hint", text: "No training run found."}));
    data.training.forEach(function (r) {
      var dl = el("dl");
      r.facts.forEach(function (kv) { dl.appendChild(el("dt", {text: kv[0]}));
                                      dl.appendChild(el("dd", {text: plain(kv[1])})); });
      box.appendChild(el("div", {cls: "run block"}, el("h3", {text: r.label}),
                         el("img", {src: r.image, alt: "training curves of " + r.label}), dl));
    });
  }
  function renderNotes() {
    var list = $("note-list");
    if (!data.notes.length) list.appendChild(el("li", {text: "none"}));
    data.notes.forEach(function (n) {
      list.appendChild(el("li", null, el("code", {text: n[0]}), ": " + n[1]));
    });
  }

  renderSummary();
  renderTraining();
  renderNotes();
  columnChooser();
  wire();
  refresh(true);
  document.body.setAttribute("data-ready", "1");
})();
"""
