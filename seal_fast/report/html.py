"""The report as one self-contained HTML page: inline CSS, images as `data:` URIs,
no script, no font, no request to anywhere. Every text that came from outside (class
names, file names, settings) is escaped."""
from __future__ import annotations

import html
import json

import numpy as np

from .thumbnails import data_uri

OPEN_UP_TO = 50          # clusters shown open; beyond this many they start collapsed (K = 1000 stays usable)
TABLE_UP_TO = 40         # a confusion matrix this size or smaller is a table; larger, a heat-map image

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}
.kv td:first-child{color:#666}.num{text-align:right}.summary>table:first-child{max-width:760px}
.summary{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
.sizes{display:flex;align-items:flex-end;gap:2px;height:80px;border-bottom:1px solid #999;max-width:900px}
.sizes span{background:#4a78c2;flex:1;min-width:1px}
.matrix td{width:28px;height:22px;text-align:center;font-size:11px;border:1px solid #eee}
.matrix td.diag{outline:1px solid #333}.matrix th{font-size:11px;font-weight:normal;white-space:nowrap}
.matrix th.col{writing-mode:vertical-rl;transform:rotate(180deg);height:90px}
details.cluster{border-top:1px solid #ddd;padding:6px 0}
details.cluster>summary{cursor:pointer;font-size:15px}
.name{font-weight:600}.noname{color:#999;font-style:italic}.conf{color:#555}.guess{color:#777;font-size:12px}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:6px 0}
.thumbs img{width:64px;height:64px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}
.doubtful img{outline:2px solid #d88}.row-label{color:#666;font-size:12px;margin-top:4px}
.notes{color:#8a4b00}.nav a{margin-right:10px;white-space:nowrap}
"""


def e(text) -> str:
    return html.escape(str(text), quote=True)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _name_html(name) -> str:
    if name is None:
        return '<span class="noname">no name (no ImageNet head or text tower for these features)</span>'
    if name.name is None:
        guess = ", ".join(f"{e(n)} {p:.2f}" for n, p in name.top)
        return f'<span class="noname">no confident name</span> <span class="guess">(best guesses: {guess})</span>'
    extra = ", ".join(f"{e(n)} {p:.2f}" for n, p in name.top)
    broader = f"; broader: {e(name.broader[0])} {name.broader[1]:.2f}" if name.broader else ""
    return (f'<span class="name">{e(name.name)}</span> <span class="conf">({name.confidence:.2f})</span> '
            f'<span class="guess">(top classes: {extra}{broader})</span>')


def _thumbs(rows, uri, css_class="") -> str:
    cells = []
    for r in rows:
        src = uri(r)
        if src is not None:
            cells.append(f'<img src="{src}" alt="row {r}" title="row {r}" loading="lazy" decoding="async">')
    return f'<div class="thumbs {css_class}">{"".join(cells)}</div>' if cells else ""


def _heatmap_uri(table: np.ndarray) -> str:
    from PIL import Image

    peak = max(1, int(table.max()))
    shade = (255 - 215 * (table / peak)).astype(np.uint8)
    img = Image.fromarray(np.stack([shade, shade, np.full_like(shade, 255)], axis=-1))
    scale = max(1, 800 // max(table.shape))
    return data_uri(img.resize((table.shape[1] * scale, table.shape[0] * scale), Image.NEAREST))


def _confusion(content) -> str:
    table, names = content.confusion, content.class_names
    if max(table.shape) > TABLE_UP_TO:
        return (f'<p>Clusters (rows, {table.shape[0]}) against classes (columns, {table.shape[1]}), matched '
                f'clusters on the diagonal, darker = more rows:</p><img alt="confusion matrix" '
                f'src="{_heatmap_uri(table)}" style="image-rendering:pixelated;max-width:100%">')
    peak = max(1, int(table.max()))
    turn = ' class="col"' if max(len(str(n)) for n in names) > 3 else ""  # long class names stand on end
    head = "".join(f"<th{turn}>{e(n)}</th>" for n in names)
    rows = []
    order = content.confusion_rows
    for i, row in enumerate(table):
        cells = "".join(
            f'<td class="{"diag" if (i, j) in content.confusion_matched else ""}" style="background:rgb({int(255 - 200 * v / peak)},'
            f'{int(255 - 160 * v / peak)},255)">{int(v) if v else ""}</td>' for j, v in enumerate(row))
        label = f"c{order[i]}" if i < len(order) else ""
        rows.append(f"<tr><th>{label}</th>{cells}</tr>")
    return f'<table class="matrix"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def render(content, uri, title: str = "seal_fast report") -> str:
    """The page; `uri(row)` gives a row's thumbnail as a `data:` URI (or None)."""
    run = content.run or {}
    method = run.get("method", "?")
    sizes = [v.size for v in content.clusters]
    kv = [("method", method), ("clusters (K)", content.n_clusters), ("rows (N)", content.n),
          ("clusters used", len(sizes)), ("largest / smallest", f"{max(sizes)} / {min(sizes)}")]
    for key, label in (("inputs", "features"), ("spaces", "spaces"), ("seed", "seed"), ("device", "device"),
                       ("backend", "backend"), ("created", "fitted")):
        if key in run:
            kv.append((label, run[key] if not isinstance(run[key], list) else ", ".join(map(str, run[key]))))
    for key, value in (run.get("timings") or {}).items():
        kv.append((key.replace("_s", " (s)"), value))
    kv.append(("typical members", content.typicality))
    kv.append(("names", content.naming))
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>",
             f"<meta name=viewport content='width=device-width'><style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>", '<div class="summary"><table class="kv">',
             "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in kv), "</table>"]
    if content.evaluation:
        ev = content.evaluation
        parts.append('<table class="kv">' + "".join(
            f"<tr><td>{k.upper()}</td><td class=num>{ev[k]:.1f}</td></tr>" for k in ("acc", "nmi", "ari"))
            + f"<tr><td>labelled rows</td><td class=num>{ev['n']}</td></tr></table>")
    parts.append("</div>")
    if run.get("params"):
        parts.append("<details><summary>settings</summary><pre>"
                     + e(json.dumps(run["params"], indent=1)) + "</pre></details>")
    biggest = max(sizes)
    parts.append("<h2>Cluster sizes</h2><div class=sizes>" + "".join(
        f'<span style="height:{max(1, round(80 * s / biggest))}px" title="c{v.cluster}: {s}"></span>'
        for v, s in zip(content.clusters, sizes)) + "</div>")
    if content.notes:
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in content.notes)
                     + "</ul>")
    if content.confusion is not None:
        parts.append("<h2>Confusion matrix (clusters matched to classes)</h2>" + _confusion(content))
        parts.append('<h2>Per-class recall (matched cluster)</h2><table class="kv">' + "".join(
            f"<tr><td>{e(n)}</td><td class=num>{_pct(r)}</td><td class=num>{s} rows</td></tr>"
            for n, r, s in content.recall) + "</table>")
    parts.append('<h2>Clusters</h2><p class="nav">' + "".join(
        f'<a href="#c{v.cluster}">c{v.cluster}</a>' for v in content.clusters[:200]) + "</p>")
    for i, v in enumerate(content.clusters):
        majority = (f" &middot; majority class {e(v.majority[0])} ({_pct(v.majority[1])})" if v.majority else "")
        opened = " open" if i < OPEN_UP_TO else ""
        parts.append(
            f'<details class="cluster" id="c{v.cluster}"{opened}><summary><b>c{v.cluster}</b> &middot; '
            f"{_name_html(v.name)} &middot; {v.size} rows{majority}</summary>"
            f'<div class="row-label">most typical</div>{_thumbs(v.typical, uri)}'
            f'<div class="row-label">least typical (look here first)</div>{_thumbs(v.doubtful, uri, "doubtful")}'
            "</details>")
    parts.append("</body></html>")
    return "".join(parts)
