"""report.json and report.html of a run, from its report data (OUT/report_data/) alone.

`numbers(data)` is every number of report.json; `render(out, data)` writes both files. The
run calls `render` right after writing the data, and `selectray report OUT` calls it on
the data read back, so both give the same numbers. No Ray, no models.
"""

from __future__ import annotations

import json

import numpy as np

from selectray.columns import CLUSTER, DISTANCE, GROUP
from selectray.report.data import (
    CALC_PATTERN,
    CALC_RULE,
    ReportData,
    center_map,
    cluster_examples,
    shown_selected,
    usable_mask,
)
from selectray.report.figures import (
    Figures,
    bars,
    grouped_bars,
    histogram,
    radius_curve,
    scatter_map,
)
from selectray.storage import Location

# The config section that holds each stage's settings (shown in the summary when the stage ran).
STAGE_SECTIONS = {"embed": "embed", "kcenter": "kcenter", "score": "selectit", "pick": "selectllm"}


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def _num(v):
    if v is None:
        return None
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    return v


def selected_mask(data: ReportData) -> np.ndarray:
    return np.isfinite(np.asarray(data.column("rank"), dtype=float))


def settings(meta: dict) -> dict:
    """What was asked for: size of the selection, the method's section, the sections of the stages that ran."""
    cfg = meta.get("config", {})
    out = {"method": meta.get("method"), "budget": cfg.get("budget"), "proportion": cfg.get("proportion"),
           "seed": cfg.get("seed")}
    sections = [meta.get("method")] + [STAGE_SECTIONS[s] for s in meta.get("stages", {}) if s in STAGE_SECTIONS]
    for name in dict.fromkeys(sections):
        if isinstance(cfg.get(name), dict):
            out[name] = cfg[name]
    return out


def _cluster_sizes(data: ReportData) -> np.ndarray:
    cluster = data.column(CLUSTER)
    return data._columns.setdefault(" cluster sizes", np.bincount(cluster[cluster >= 0]))


def why(data: ReportData, p: int, *, groups: list[dict] | None = None, ids: np.ndarray | None = None) -> dict:
    """Why row `p` is where it is: its scores, cluster, group and rater answer (whatever the run has)."""
    ids = data.column("id") if ids is None else ids
    out: dict = {"length": _num(data.column("length")[p])}
    for name in data.rows.column_names:
        if name.startswith(("score_", "p_other_")) or name == "picked_by":
            out[name] = _num(data.rows[name][p].as_py())
    cluster = data.column(CLUSTER)
    if cluster is not None and cluster[p] >= 0:
        c = int(cluster[p])
        out["cluster_id"] = c
        out["distance"] = _num(data.column(DISTANCE)[p]) if DISTANCE in data.rows.column_names else None
        out["cluster_size"] = int(_cluster_sizes(data)[c])
        if data.centers is not None:
            pos = data.centers["pos"].to_numpy()
            hit = np.flatnonzero(pos == p)
            if len(hit):
                order = int(hit[0])
                out["center_order"] = order
                # The farthest row's distance when this center was added: why greedy k-center took it.
                out["radius_before"] = _num(data.centers["radius"][order - 1].as_py()) if order > 0 else None
    group = data.column(GROUP)
    if group is not None and groups is not None and group[p] >= 0:
        g = groups[int(group[p])]
        out.update({"group_id": int(group[p]), "answer": g["answer"], "status": g["status"],
                    "candidates": len(g["candidates"]),
                    "beaten": [str(ids[c]) for c in g["candidates"] if c != p]})
    return out


def numbers(data: ReportData, evaluation: dict | None = None) -> dict:
    """Every number of report.json, from the report data."""
    m = data.meta
    usable = usable_mask(data)
    sel = selected_mask(data)
    ids = data.column("id")
    length = data.column("length").astype(float)
    calc = data.column("calc").astype(bool)
    pool = usable
    report = {
        "method": m["method"], "input": m["input"], "output": m["output"], "input_rows": m["input_rows"],
        "selected": m["selected"], "not_selected": int((pool & ~sel).sum()), "rejected": m["rejected"],
        "rejected_by_reason": m["rejected_by_reason"], "budget": m["budget"], "seed": m["seed"],
        "columns": m.get("config", {}).get("columns"),  # the run's column mapping (read by `selectray export`)
        "settings": settings(m),
        "wall_seconds": round(sum(s.get("seconds") or 0 for s in m["stages"].values()), 3),
        "stages": m["stages"], "selection": m["selection"],
        "length": {"pool_mean": _mean(length[pool]), "selected_mean": _mean(length[sel])},
        "statistics": {
            "rows": {"pool": int(pool.sum()), "selected": int(sel.sum())},
            "length_chars": {"what": "characters of instruction + input + response",
                             "pool_mean": _mean(length[pool]), "selected_mean": _mean(length[sel]),
                             "pool_median": float(np.median(length[pool])) if pool.any() else None,
                             "selected_median": float(np.median(length[sel])) if sel.any() else None},
            "calculation": {"rule": CALC_RULE, "pattern": CALC_PATTERN,
                            "pool_rows": int(calc[pool].sum()), "selected_rows": int(calc[sel].sum()),
                            "pool_share": float(calc[pool].mean()) if pool.any() else None,
                            "selected_share": float(calc[sel].mean()) if sel.any() else None},
        },
    }
    score = data.column("score_model")
    if score is not None:
        report["statistics"]["score_model"] = {"pool_mean": _mean(score[pool]), "selected_mean": _mean(score[sel])}
    cluster = data.column(CLUSTER)
    if data.centers is not None and cluster is not None:
        k = data.centers.num_rows
        sizes = np.bincount(cluster[cluster >= 0], minlength=k)
        report["kcenter"] = {"k": k, **{key: m.get("kcenter", {}).get(key) for key in ("seeds", "passes", "reused")},
                             "radius": float(data.centers["radius"][k - 1].as_py()) if k else None,
                             "cluster_size": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                              "max": int(sizes.max())} if k else None}
    report.update(m.get("sections", {}))
    if "coverage" in m:
        report["coverage"] = m["coverage"]
    groups = data.groups.to_pylist() if data.groups is not None else None
    top, bottom = shown_selected(data.column("rank"))
    rank = data.column("rank")
    report["selected_rows"] = {
        part: [{"rank": int(rank[p]), "id": str(ids[p]), "pos": int(p), "why": why(data, int(p), groups=groups, ids=ids)}
               for p in positions]
        for part, positions in (("top", top), ("bottom", bottom))}
    if cluster is not None and DISTANCE in data.rows.column_names:
        examples = cluster_examples(cluster, data.column(DISTANCE), usable, center_map(data.centers))
        report["clusters"] = [{"cluster_id": c, "size": size, "selected": int((sel & (cluster == c)).sum()),
                               "examples": [str(ids[p]) for p in ex]} for c, size, ex in examples]
    if data.map is not None:
        mp = data.map["pos"].to_numpy()
        report["map"] = {"points": len(mp), "pool_sample": int(data.map["in_sample"].to_numpy().sum()),
                         "selected": int(sel[mp].sum()), "explained_variance": m.get("map_explained_variance")}
    if evaluation is not None:
        report["eval"] = evaluation
    return report


def read_eval(out: Location) -> dict | None:
    """OUT/eval.json (written by `selectray eval`), when present."""
    f = out / "eval.json"
    if not f.is_file():
        return None
    try:
        return f.read_json()
    except (OSError, ValueError):
        return None


def figures_for(data: ReportData, report: dict) -> Figures:
    """The report's plots, drawn from the data (the method's own figures come last, as stored)."""
    figs = Figures()
    usable, sel = usable_mask(data), selected_mask(data)
    length = data.column("length").astype(float)
    if data.map is not None:
        mp = data.map["pos"].to_numpy()
        xy = np.column_stack([data.map["x"].to_numpy(), data.map["y"].to_numpy()])
        figs.add("Map of the pool (PCA of the embeddings), selection in red", scatter_map(xy, sel[mp]), size=(6.4, 5.0))
    cov = report.get("coverage")
    if cov:
        figs.add("Coverage: distance to the nearest chosen row (lower: better)", grouped_bars(
            {"radius (max)": {"selection": cov["radius"], "random subset": cov["random_radius"]},
             "mean distance": {"selection": cov["mean_distance"], "random subset": cov["random_mean_distance"]}},
            ylabel="embedding distance"))
    figs.add("Row length (characters)", histogram(length[usable], length[sel], xlabel="characters"))
    if report["rejected_by_reason"]:
        figs.add("Rejected rows by reason", bars(report["rejected_by_reason"], xlabel="rows"))
    if data.centers is not None and data.centers.num_rows:
        figs.add("Coverage radius as centers are added", radius_curve(data.centers["radius"].to_numpy()))
        cluster = data.column(CLUSTER)
        sizes = np.bincount(cluster[cluster >= 0], minlength=data.centers.num_rows)
        figs.add("Cluster sizes", histogram(sizes, xlabel="rows per cluster", bins=min(40, max(5, len(sizes) // 2))))
    ev = report.get("eval")
    if isinstance(ev, dict):
        means = _eval_means(ev)
        if means:
            figs.add("Evaluation loss (mean over seeds, lower is better)", bars(means, xlabel="loss"))
    for title, png in data.figures:
        figs.add_png(title, png)
    return figs


def _eval_means(ev: dict) -> dict[str, float]:
    out = {}
    if isinstance(ev.get("base_loss"), (int, float)):
        out["base model"] = float(ev["base_loss"])
    for key in ("selection", "comparison"):
        part = ev.get(key)
        if isinstance(part, dict) and isinstance(part.get("mean"), (int, float)):
            name = "selection" if key == "selection" else f"comparison: {part.get('name') or ''}"
            out[name[:40]] = float(part["mean"])
    return out


def render(out: Location, data: ReportData, source: Location | None = None) -> dict:
    """Write report.json and report.html of a run (its output folder `source`, default `out`)
    into `out` from its data; returns the report."""
    from selectray.report.page import run_page

    report = numbers(data, read_eval(source or out))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable, ensure_ascii=False))
    (out / "report.html").write_text(run_page(report, data, figures_for(data, report)))
    return report


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
