"""report.json (numbers) and report.html (the same numbers plus plots), written at the end of a run."""

from __future__ import annotations

import base64
import html
import io
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from selectray.storage import Location


@dataclass
class StageTimer:
    """Wall time and throughput per stage; prints one summary line when a stage ends."""

    stages: dict[str, dict] = field(default_factory=dict)
    quiet: bool = False

    @contextmanager
    def stage(self, name: str, rows: int | None = None):
        info: dict = {"rows": rows}
        start = time.perf_counter()
        yield info
        seconds = time.perf_counter() - start
        info["seconds"] = round(seconds, 3)
        if info.get("rows"):
            info["rows_per_second"] = round(info["rows"] / max(seconds, 1e-9), 1)
        self.stages[name] = info
        if not self.quiet:
            note = " (reused checkpoint)" if info.get("reused") else ""
            detail = f" {info['summary']}" if info.get("summary") else ""
            r = info.get("rows_per_second")
            rate = "" if r is None else f", {r:,.0f} rows/s" if r >= 10 else f", {r:.2f} rows/s"
            print(f"[{name}]{detail} {seconds:.1f} s{rate}{note}", flush=True)


class Figures:
    """Plots collected during a run, rendered to PNG for the HTML report."""

    def __init__(self):
        self.items: list[tuple[str, bytes]] = []

    def add(self, title: str, draw) -> None:
        """`draw(ax)` fills a matplotlib axis; failures to plot never fail the run."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        try:
            draw(ax)
            ax.set_title(title)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            self.items.append((title, buf.getvalue()))
        finally:
            plt.close(fig)


def histogram(values: np.ndarray, selected: np.ndarray | None = None, *, xlabel: str, bins: int = 40):
    """A draw function: the pool's histogram with the selected rows' overlaid."""

    def draw(ax):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        edges = np.histogram_bin_edges(v, bins=bins) if len(v) else bins
        ax.hist(v, bins=edges, color="#9db4cf", label="pool")
        if selected is not None and len(selected):
            ax.hist(np.asarray(selected, dtype=float), bins=edges, color="#d9534f", alpha=0.8, label="selected")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")

    return draw


def bars(counts: dict[str, int], *, xlabel: str):
    """A draw function: one bar per key."""

    def draw(ax):
        keys = list(counts)
        ax.barh(keys, [counts[k] for k in keys], color="#9db4cf")
        ax.set_xlabel(xlabel)

    return draw


def radius_curve(radii: np.ndarray):
    """A draw function: the k-center coverage radius as centers are added."""

    def draw(ax):
        ax.plot(np.arange(1, len(radii) + 1), radii, color="#d9534f")
        ax.set_xlabel("centers")
        ax.set_ylabel("coverage radius")

    return draw


def cluster_report(c, figures: Figures) -> dict:
    """The k-center section of the report (`c`: stages.kcenter.Clusters)."""
    sizes = c.sizes()
    figures.add("Coverage radius as centers are added", radius_curve(c.radii))
    figures.add("Cluster sizes", histogram(sizes, xlabel="rows per cluster", bins=min(40, max(5, len(sizes) // 2))))
    return {"k": int(len(c.centers)), "seeds": c.n_seeds, "radius": float(c.radii[-1]), "passes": c.passes,
            "reused": c.reused, "cluster_size": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                                 "max": int(sizes.max())}}


def build_report(ctx, method, selection, stages: dict, n_selected: int, n_rejected: int) -> dict:
    """Assemble report.json and report.html of a finished run from its context; returns the report."""
    from selectray.coverage import coverage
    from selectray.stages.write import reject_counts

    cfg, pool, lengths = ctx.cfg, ctx.pool, ctx.lengths
    figures = Figures()
    report = {
        "method": cfg.method,
        "input": cfg.input,
        "output": ctx.out.uri,
        "input_rows": pool.num_input,
        "selected": n_selected,
        "not_selected": pool.num_usable - len(ctx.rejects.late) - n_selected,
        "rejected": n_rejected,
        "rejected_by_reason": reject_counts(pool, ctx.rejects.late),
        "budget": ctx.budget,
        "seed": cfg.seed,
        "stages": stages,
        "selection": selection.stats,
        "length": {"pool_mean": float(lengths.mean()), "selected_mean": float(lengths[selection.positions].mean())},
    }
    figures.add("Row length (characters)", histogram(lengths, lengths[selection.positions], xlabel="characters"))
    if report["rejected_by_reason"]:
        figures.add("Rejected rows by reason", bars(report["rejected_by_reason"], xlabel="rows"))
    if ctx.clusters is not None:
        report["kcenter"] = cluster_report(ctx.clusters, figures)
    report.update(method.report(ctx, selection, figures))
    if ctx.embeddings is not None:
        report["coverage"] = coverage(ctx.embeddings, selection.positions, ctx.usable(), cfg.report.coverage_sample,
                                      cfg.seed)
    write_report(ctx.out, report, figures)
    return report


def write_report(out_dir: Location, data: dict, figures: Figures) -> None:
    """Write report.json and a self-contained report.html."""
    (out_dir / "report.json").write_text(json.dumps(data, indent=2, default=_jsonable))
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v, default=_jsonable))}</td></tr>"
        for k, v in data.items()
    )
    imgs = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, png in figures.items
    )
    (out_dir / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>selectray report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{text-align:left;padding:2px 8px;"
        "vertical-align:top}th{white-space:nowrap}figure{display:inline-block;margin:8px}"
        "td{font-family:monospace;font-size:90%}</style>"
        f"<h1>selectray run: {html.escape(str(data.get('method')))}</h1>"
        f"<p>{data.get('input_rows')} input rows: {data.get('selected')} selected, "
        f"{data.get('not_selected')} not selected, {data.get('rejected')} rejected.</p>"
        f"{imgs}<h2>Numbers</h2><table>{rows}</table>"
    )


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
