"""Several finished runs side by side: counts, statistics, coverage, evaluation, and how their
selections overlap (by id), with the rows one run chose and another did not. From the runs'
files only (OUT/report_data/, OUT/selected.parquet); no Ray."""

from __future__ import annotations

import json
from html import escape
from itertools import combinations

import numpy as np
import pyarrow.parquet as pq

from selectray.columns import ID
from selectray.report.assemble import figures_for, numbers, read_eval, selected_mask
from selectray.report.data import SHOWN, read_data
from selectray.report.figures import Figures, grouped_bars
from selectray.report.page import figure_html, fmt, page, share, table, text_block
from selectray.storage import Location


def selected_ids(data) -> list[str]:
    """The run's selected ids, best rank first."""
    rank = np.asarray(data.column("rank"), dtype=float)
    chosen = np.flatnonzero(selected_mask(data))
    chosen = chosen[np.argsort(rank[chosen], kind="stable")]
    ids = data.column(ID)
    return [str(ids[p]) for p in chosen]


def _labels(outs: list[Location], methods: list[str]) -> list[str]:
    labels = [f"{m} ({o.name})" for m, o in zip(methods, outs)]
    return [f"{i + 1}. {lab}" for i, lab in enumerate(labels)] if len(set(labels)) < len(labels) else labels


def compare(outs: list[Location]) -> tuple[dict, dict]:
    """The comparison's numbers (compare.json) and what its page needs: per run the report and
    the text of the rows only that run chose."""
    datas = [read_data(o) for o in outs]
    reports = [numbers(d, read_eval(o)) for d, o in zip(datas, outs)]
    labels = _labels(outs, [r["method"] for r in reports])
    chosen = [selected_ids(d) for d in datas]
    sets = [set(c) for c in chosen]
    runs = []
    for label, r, d in zip(labels, reports, datas):
        s = r["statistics"]
        ev = r.get("eval") or {}
        runs.append({
            "label": label, "output": r["output"], "method": r["method"], "input_rows": r["input_rows"],
            "selected": r["selected"], "not_selected": r["not_selected"], "rejected": r["rejected"],
            "budget": r["budget"], "seed": r["seed"], "wall_seconds": r["wall_seconds"],
            "pool_fingerprint": d.meta.get("pool_fingerprint"),
            "length_pool_mean": s["length_chars"]["pool_mean"], "length_selected_mean": s["length_chars"]["selected_mean"],
            "calculation_pool_share": s["calculation"]["pool_share"],
            "calculation_selected_share": s["calculation"]["selected_share"],
            "score_model_selected_mean": (s.get("score_model") or {}).get("selected_mean"),
            "coverage": r.get("coverage"),
            "eval_loss_mean": (ev.get("selection") or {}).get("mean") if isinstance(ev, dict) else None,
        })
    overlap, differences = [], []
    for i, j in combinations(range(len(outs)), 2):
        a, b = sets[i], sets[j]
        both = len(a & b)
        overlap.append({"a": labels[i], "b": labels[j], "both": both, "only_a": len(a - b), "only_b": len(b - a),
                        "jaccard": both / len(a | b) if a | b else None})
        differences.append({"a": labels[i], "b": labels[j],
                            "only_a": [x for x in chosen[i] if x not in b][:SHOWN],
                            "only_b": [x for x in chosen[j] if x not in a][:SHOWN]})
    result = {"runs": runs, "same_pool": len({r["pool_fingerprint"] for r in runs}) == 1,
              "calculation_rule": reports[0]["statistics"]["calculation"]["rule"],
              "overlap": overlap, "differences": differences}
    texts = {}
    for k, (o, d) in enumerate(zip(outs, datas)):
        wanted = {x for diff in differences for side, lab in (("only_a", "a"), ("only_b", "b"))
                  if diff[lab] == labels[k] for x in diff[side]}
        texts[labels[k]] = _texts(o, d.meta.get("columns", {}), wanted)
    return result, {"labels": labels, "texts": texts, "datas": datas, "reports": reports}


def _texts(out: Location, columns: dict, ids: set[str]) -> dict[str, dict]:
    """id -> text of some selected rows, read from OUT/selected.parquet."""
    if not ids:
        return {}
    f = out / "selected.parquet"
    names = {"instruction": columns.get("instruction"), "input": columns.get("input"), "output": columns.get("output")}
    schema = pq.read_schema(f.path, filesystem=f.fs) if f.is_file() else None
    present = set(schema.names) if schema is not None else set()
    cols = [ID] + [c for c in names.values() if c and c in present]
    t = pq.read_table(f.path, filesystem=f.fs, columns=cols, filters=[(ID, "in", sorted(ids))])
    out_texts = {}
    for row in t.to_pylist():
        out_texts[str(row[ID])] = {k: (row.get(c) if c else None) for k, c in names.items()}
    return out_texts


def write_compare(outs: list[Location], target: Location) -> dict:
    """Write compare.json and compare.html into `target`; returns the numbers."""
    result, extra = compare(outs)
    target.mkdir()
    (target / "compare.json").write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False))
    (target / "compare.html").write_text(compare_page(result, extra))
    return result


def compare_page(result: dict, extra: dict) -> str:
    """The comparison as one self-contained HTML page."""
    runs, labels = result["runs"], extra["labels"]
    metrics = [
        ("output", lambda r: f"<code>{escape(r['output'])}</code>"), ("method", lambda r: escape(r["method"])),
        ("input rows", lambda r: fmt(r["input_rows"])), ("selected", lambda r: fmt(r["selected"])),
        ("not selected", lambda r: fmt(r["not_selected"])), ("rejected", lambda r: fmt(r["rejected"])),
        ("wall time (s)", lambda r: fmt(r["wall_seconds"])),
        ("mean length, pool (chars)", lambda r: fmt(r["length_pool_mean"])),
        ("mean length, selected (chars)", lambda r: fmt(r["length_selected_mean"])),
        ("rows involving calculation, pool", lambda r: share(r["calculation_pool_share"])),
        ("rows involving calculation, selected", lambda r: share(r["calculation_selected_share"])),
        ("mean SelectIT score_model, selected", lambda r: fmt(r["score_model_selected_mean"])),
        ("coverage radius (selection / random)", lambda r: _pair(r["coverage"], "radius", "random_radius")),
        ("mean distance (selection / random)", lambda r: _pair(r["coverage"], "mean_distance", "random_mean_distance")),
        ("eval: mean loss of the selection", lambda r: fmt(r["eval_loss_mean"])),
    ]
    summary = table(["", *labels], [[escape(name), *[f(r) for r in runs]] for name, f in metrics])
    if not result["same_pool"]:
        summary = "<p class=bad>These runs read different pools (their input fingerprints differ).</p>" + summary
    figs = Figures()
    cov = {r["label"]: r["coverage"] for r in runs if r["coverage"]}
    if cov:
        figs.add("Coverage: distance to the nearest chosen row (lower: better)", grouped_bars(
            {"radius (max)": {k: v["radius"] for k, v in cov.items()} | {"random subset": np.mean([v["random_radius"] for v in cov.values()])},
             "mean distance": {k: v["mean_distance"] for k, v in cov.items()}
             | {"random subset": np.mean([v["random_mean_distance"] for v in cov.values()])}},
            ylabel="embedding distance"), size=(7.2, 3.8))
    maps = [(lab, t, p) for lab, d, r in zip(labels, extra["datas"], extra["reports"])
            for t, p in figures_for(d, r).items if t.startswith("Map of")]
    overlap = table(["run A", "run B", "chosen by both", "only A", "only B", "Jaccard"], [
        [escape(o["a"]), escape(o["b"]), fmt(o["both"]), fmt(o["only_a"]), fmt(o["only_b"]), fmt(o["jaccard"], 3)]
        for o in result["overlap"]], {2, 3, 4, 5})
    diffs = ""
    for dset in result["differences"]:
        for side, mine, other in (("only_a", dset["a"], dset["b"]), ("only_b", dset["b"], dset["a"])):
            rows = [[f"<code>{escape(i)}</code>", text_block(extra["texts"][mine].get(i))] for i in dset[side]]
            diffs += (f"<h3>Chosen by {escape(mine)}, not by {escape(other)} (first {len(rows)} by rank)</h3>"
                      + (table(["id", "text"], rows, classes={1: "text"}) if rows else "<p class=muted>none</p>"))
    sections = [("summary", "Runs", summary + f"<p class=muted>Calculation rule: {escape(result['calculation_rule'])}.</p>"),
                ("coverage", "Coverage and maps", "".join(figure_html(t, p) for t, p in figs.items)
                 + "".join(figure_html(f"{lab}: {t}", p) for lab, t, p in maps)),
                ("overlap", "Overlap of the selections (by id)", overlap), ("differences", "Rows one run chose and another did not", diffs)]
    return page("selectray comparison", " · ".join(labels), sections)


def _pair(cov: dict | None, a: str, b: str) -> str:
    return "–" if not cov else f"{fmt(cov[a], 3)} / {fmt(cov[b], 3)}"
