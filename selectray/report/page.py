"""report.html: a self-contained page (inline CSS, a few lines of JS, PNGs as data URIs; no network).

Every text that comes from the data (row texts, ids, rater answers, settings) is escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape

import numpy as np

from selectray.report.data import ReportData, center_map
from selectray.report.figures import Figures

PREVIEW = 240  # characters of a text shown before "show all"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#1d2733;color:#fff;padding:18px 32px 10px}header h1{margin:0;font-size:24px}
header .sub{color:#b9c4d0;margin:4px 0 10px;font-size:13px}nav a{color:#cfe0f5;margin-right:14px;font-size:13px;text-decoration:none}
nav a:hover{text-decoration:underline}main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{font-size:19px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}th,td{text-align:left;padding:4px 10px;vertical-align:top;border-bottom:1px solid #eef0f3}
th{background:#f2f4f7;font-weight:600;white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e1e5ea;border-radius:8px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#5b6b7c;font-size:12px}
.eq{font-size:16px;margin:6px 0 12px}.sel{color:#c9302c;font-weight:600}.muted{color:#6b7785;font-size:13px}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;border:1px solid #eef0f3;padding:6px 8px;margin:4px 0;font-size:13px;max-height:420px;overflow:auto}
code{font-size:12.5px;background:#f2f4f7;padding:1px 4px;border-radius:3px;word-break:break-word}
td.id code{white-space:nowrap}td.text{max-width:620px}td.why{max-width:460px;font-size:13px}details summary{cursor:pointer;color:#2a6bb3;font-size:13px}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}figure img{max-width:100%;border:1px solid #eef0f3}
figcaption{font-size:12px;color:#5b6b7c}.clusters{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px}
.cluster{border:1px solid #e1e5ea;border-radius:8px;padding:8px 12px}.cluster ol{padding-left:18px;margin:4px 0}
button{font-size:12px;margin:0 6px 6px 0}.bad{color:#c9302c}
.two{display:grid;grid-template-columns:minmax(320px,1fr) 2fr;gap:28px}@media(max-width:900px){.two{grid-template-columns:1fr}}
"""

JS = """
document.querySelectorAll('button[data-open]').forEach(function (b) {
  b.addEventListener('click', function () {
    var open = b.getAttribute('data-open') === '1';
    document.querySelectorAll(b.getAttribute('data-scope') + ' details').forEach(function (d) { d.open = open; });
  });
});
"""


def fmt(v, digits: int = 4) -> str:
    """A number or value as short escaped text."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        return f"{v:,.{digits}g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, dict):  # a config section: its set values inline
        return " &ensp;·&ensp; ".join(f"<code>{escape(str(k))}</code> {fmt(x, digits)}" for k, x in v.items()
                                     if x is not None and x != []) or "–"
    if isinstance(v, list):
        return f"<code>{escape(json.dumps(v, default=str))}</code>"
    return escape(str(v))


def duration(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def share(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
          classes: dict[int, str] | None = None) -> str:
    """An HTML table; cells are already-escaped HTML. `numeric` columns align right."""
    cls = {**{i: "n" for i in numeric}, **(classes or {})}
    th = "".join(f"<th{f' class={cls[i]}' if i in cls else ''}>{escape(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{f' class={cls[i]}' if i in cls else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def text_block(t: dict | None) -> str:
    """A row's text: the instruction's start, and all of it (instruction, input, response) on demand."""
    if not t:
        return "<span class=muted>(text not kept)</span>"
    ins = t.get("instruction") or ""
    head = escape(ins[:PREVIEW]) + ("…" if len(ins) > PREVIEW else "")
    parts = [f"<b>Instruction</b><pre>{escape(ins)}</pre>"]
    if t.get("input"):
        parts.append(f"<b>Input</b><pre>{escape(t['input'])}</pre>")
    if t.get("output") is not None:
        parts.append(f"<b>Response</b><pre>{escape(t.get('output') or '')}</pre>")
    if t.get("clipped"):
        parts.append("<span class=muted>(long fields clipped for the report)</span>")
    return f"<div>{head}</div><details><summary>show all</summary>{''.join(parts)}</details>"


def short(t: dict | None, n: int = 120) -> str:
    ins = (t or {}).get("instruction") or ""
    return escape(ins[:n]) + ("…" if len(ins) > n else "")


def figure_html(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f"<figure><img alt='{escape(title)}' src='data:image/png;base64,{data}'><figcaption>{escape(title)}</figcaption></figure>"


def why_html(w: dict, texts: dict[int, dict], id_to_pos: dict[str, int]) -> str:
    """The reasons a row was chosen, as a compact list."""
    items = []
    if "score_model" in w:
        items.append(f"SelectIT score_model <b>{fmt(w['score_model'])}</b>")
        sent = {k.removeprefix("score_sentence_"): v for k, v in w.items() if k.startswith("score_sentence_")}
        if sent:
            items.append("per model (sentence level): " + ", ".join(f"{escape(m)} {fmt(v)}" for m, v in sent.items()))
        tok = {k.removeprefix("score_token_"): v for k, v in w.items() if k.startswith("score_token_")}
        if tok:
            items.append("<details><summary>token level per prompt</summary>"
                         + "<br>".join(f"{escape(k)}: {fmt(v)}" for k, v in tok.items()) + "</details>")
        other = {k.removeprefix("p_other_"): v for k, v in w.items() if k.startswith("p_other_")}
        if other:
            items.append("mass outside 1–5: " + ", ".join(f"{escape(m)} {fmt(v, 3)}" for m, v in other.items()))
    if "group_id" in w:
        items.append(f"group {w['group_id']} of {w['candidates']} candidates; chosen by <b>{escape(str(w.get('picked_by')))}</b>")
        items.append(f"rater answered <code>{escape(str(w.get('answer') or ''))}</code> ({escape(str(w.get('status')))})")
        if w.get("beaten"):
            lis = "".join(f"<li><code>{escape(i)}</code> {short(texts.get(id_to_pos.get(i, -1)))}</li>" for i in w["beaten"])
            items.append(f"<details><summary>the {len(w['beaten'])} other candidates</summary><ol>{lis}</ol></details>")
    elif "picked_by" in w and w["picked_by"] is not None:
        items.append(f"chosen by {escape(str(w['picked_by']))}")
    if "center_order" in w:
        rb = w.get("radius_before")
        items.append(f"<b>k-center center #{w['center_order'] + 1}</b> of cluster {w['cluster_id']} ({w['cluster_size']:,} rows)"
                     + ("" if rb is None else f": when chosen, the row farthest from the earlier centers (distance {fmt(rb, 3)})"))
    elif "cluster_id" in w:
        d = w.get("distance")
        items.append(f"cluster {w['cluster_id']} ({w['cluster_size']:,} rows), distance to its center "
                     + ("–" if d is None else f"{d:.3f}"))
    items.append(f"{w['length']:,} characters")
    return "".join(f"<div>{i}</div>" for i in items)


def selected_table(rows: list[dict], texts: dict[int, dict], id_to_pos: dict[str, int]) -> str:
    body = [[f"{r['rank']:,}", f"<code>{escape(r['id'])}</code>", text_block(texts.get(r["pos"])),
             why_html(r["why"], texts, id_to_pos)] for r in rows]
    return table(["rank", "id", "text", "why it was chosen"], body, numeric={0}, classes={1: "id", 2: "text", 3: "why"})


def run_page(report: dict, data: ReportData, figs: Figures) -> str:
    """The whole report.html of one run."""
    texts = data.text_of()
    ids = data.column("id")
    id_to_pos = {str(ids[p]): p for p in texts}
    s = report["statistics"]
    left = (
        f"<p class=eq><b>{report['input_rows']:,}</b> input rows = <b class=sel>{report['selected']:,}</b> selected + "
        f"<b>{report['not_selected']:,}</b> not selected + <b>{report['rejected']:,}</b> rejected</p>"
        "<div class=cards>"
        + "".join(f"<div class=card><b>{v}</b><span>{escape(k)}</span></div>" for k, v in (
            ("method", escape(str(report["method"]))), ("budget", fmt(report["budget"])),
            ("wall time", duration(report["wall_seconds"])), ("seed", fmt(report["seed"]))))
        + "</div>"
    )
    if report["rejected_by_reason"]:
        left += "<h3>Rejected rows by reason</h3>" + table(
            ["reason", "rows"], [[escape(k), fmt(v)] for k, v in report["rejected_by_reason"].items()], {1})
    right = "<h3>Settings</h3>" + table(["section", "value"], [[escape(k), fmt(v)] for k, v in report["settings"].items()])
    summary = f"<div class=two><div>{left}</div><div>{right}</div></div>"
    stages = table(["stage", "rows", "seconds", "rows/s", "checkpoint", "what happened"], [
        [escape(name), fmt(st.get("rows")), fmt(st.get("seconds")), fmt(st.get("rows_per_second")),
         "reused" if st.get("reused") else ("computed" if "reused" in st else "–"), escape(str(st.get("summary") or "").rstrip(","))]
        for name, st in report["stages"].items()], {1, 2, 3})
    calc = s["calculation"]
    stat_rows = [["rows", fmt(s["rows"]["pool"]), fmt(s["rows"]["selected"])],
                 ["mean length (characters of instruction + input + response)", fmt(s["length_chars"]["pool_mean"]),
                  fmt(s["length_chars"]["selected_mean"])],
                 ["median length (characters)", fmt(s["length_chars"]["pool_median"]), fmt(s["length_chars"]["selected_median"])],
                 ["rows involving calculation", share(calc["pool_share"]), share(calc["selected_share"])]]
    if "score_model" in s:
        stat_rows.append(["mean SelectIT score_model", fmt(s["score_model"]["pool_mean"]), fmt(s["score_model"]["selected_mean"])])
    statistics = (table(["statistic (as SelectIT reports them)", "pool", "selected"], stat_rows, {1, 2})
                  + f"<p class=muted>Calculation rule: {escape(calc['rule'])}.</p>")
    sel = report["selected_rows"]
    chosen = ("<button data-open=1 data-scope='#selected'>expand all</button>"
              "<button data-open=0 data-scope='#selected'>collapse all</button>"
              f"<h3>Top {len(sel['top'])} by rank</h3>" + selected_table(sel["top"], texts, id_to_pos))
    if sel["bottom"]:
        chosen += f"<h3>Bottom {len(sel['bottom'])} by rank</h3>" + selected_table(sel["bottom"], texts, id_to_pos)
    sections = [("summary", "Summary", summary), ("stages", "Stages", stages), ("statistics", "Selected against pool", statistics),
                ("selected", "Selected rows and why", chosen)]
    if report.get("clusters"):
        sections.append(("clusters", "Clusters: the largest, with examples", _clusters(report, data, texts)))
    coverage = _coverage(report)
    plots = [f for f in figs.items if f[0].startswith(("Map of", "Coverage:"))]
    if plots or coverage:
        sections.append(("map", "Map and coverage", "".join(figure_html(t, p) for t, p in plots) + coverage))
    if isinstance(report.get("eval"), dict):
        sections.append(("eval", "Evaluation (eval.json)", _eval(report["eval"])))
    others = [f for f in figs.items if f not in plots]
    sections.append(("figures", "Figures", "".join(figure_html(t, p) for t, p in others)))
    method_parts = {k: v for k, v in report.items() if k in data.meta.get("sections", {}) or k == "kcenter"}
    if method_parts:
        sections.append(("method", "Method numbers", "".join(
            f"<h3>{escape(k)}</h3>" + table(["key", "value"], [[escape(a), fmt(b)] for a, b in v.items()])
            for k, v in method_parts.items() if isinstance(v, dict))))
    sections.append(("numbers", "All numbers", "<details><summary>report.json</summary><pre>"
                     + escape(json.dumps(report, indent=2, default=str)) + "</pre></details>"))
    return page(f"selectray report: {report['method']}", f"{report['output']} · created {data.meta.get('created', '')}",
                sections)


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A complete HTML document: header, navigation, the sections (id, heading, already-escaped HTML)."""
    nav = "".join(f"<a href='#{sid}'>{escape(h)}</a>" for sid, h, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{escape(h)}</h2>{html}</section>" for sid, h, html in sections)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><header><h1>{escape(title)}</h1>"
            f"<p class=sub>{escape(subtitle)}</p><nav>{nav}</nav></header><main>{body}</main>"
            f"<script>{JS}</script></body></html>")


def _clusters(report: dict, data: ReportData, texts: dict[int, dict]) -> str:
    ids = data.column("id")
    id_to_pos = {str(ids[p]): p for p in texts}
    centers = center_map(data.centers)
    cards = []
    for c in report["clusters"]:
        roles = ["center" if c["cluster_id"] in centers else "nearest to the center", "median distance", "farthest"]
        lis = "".join(f"<li><span class=muted>{roles[i] if i < 3 else ''}</span> <code>{escape(i_d)}</code> "
                      f"{text_block(texts.get(id_to_pos.get(i_d, -1)))}</li>" for i, i_d in enumerate(c["examples"]))
        cards.append(f"<div class=cluster><b>cluster {c['cluster_id']}</b> · {c['size']:,} rows · "
                     f"<span class=sel>{c['selected']:,} selected</span><ol>{lis}</ol></div>")
    return f"<div class=clusters>{''.join(cards)}</div>"


def _coverage(report: dict) -> str:
    cov = report.get("coverage")
    out = ""
    if cov:
        out += ("<h3>Coverage against a random subset of the same size</h3>" + table(
            ["", "selection", "random subset"],
            [["radius: farthest sampled row from its nearest chosen row", fmt(cov["radius"]), fmt(cov["random_radius"])],
             ["mean distance to the nearest chosen row", fmt(cov["mean_distance"]), fmt(cov["random_mean_distance"])]],
            {1, 2}) + f"<p class=muted>Over a seeded sample of {cov['sample_rows']:,} pool rows.</p>")
    mp = report.get("map")
    if mp:
        ev = mp.get("explained_variance") or []
        out += (f"<p class=muted>Map: {mp['pool_sample']:,} sampled pool rows and {mp['selected']:,} selected rows, "
                "projected on the first two principal components of the sample"
                + (f" ({', '.join(share(v) for v in ev)} of its variance)" if ev else "") + ".</p>")
    return out


def _eval(ev: dict) -> str:
    rows = [[escape(k), fmt(ev.get(k))] for k in ("model", "eval_rows", "seeds", "base_loss") if k in ev]
    for key in ("selection", "comparison"):
        part = ev.get(key)
        if isinstance(part, dict):
            rows.append([escape(f"{key}: {part.get('name', '')}"),
                         f"mean loss {fmt(part.get('mean'))} over {fmt(len(part.get('loss') or []))} seeds "
                         f"({fmt(part.get('rows'))} training rows): {fmt(part.get('loss'))}"])
    diff = ev.get("difference")
    if isinstance(diff, dict):
        ci = diff.get("ci95")
        rows.append(["difference (selection − comparison)", f"{fmt(diff.get('mean'))}"
                     + ("" if not ci else f", 95 % interval [{fmt(ci[0])}, {fmt(ci[1])}]")])
    rest = {k: v for k, v in ev.items() if k not in {"model", "eval_rows", "seeds", "base_loss", "selection", "comparison", "difference"}}
    rows += [[escape(k), fmt(v)] for k, v in rest.items()]
    return table(["", "value"], rows)
