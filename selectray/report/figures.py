"""Plots for report.html: each a `draw(ax)` function, rendered to PNG by `Figures`.

Pure numpy + matplotlib (Agg backend); a figure that fails to draw is left out, never
failing a run.
"""

from __future__ import annotations

import io

import numpy as np

POOL, SELECTED, RANDOM = "#9db4cf", "#d9534f", "#8c8c8c"


class Figures:
    """Plots collected for a report, rendered to PNG."""

    def __init__(self):
        self.items: list[tuple[str, bytes]] = []

    def add(self, title: str, draw, size: tuple[float, float] = (6.4, 3.6)) -> None:
        """`draw(ax)` fills a matplotlib axis; failures to plot never fail the run."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=size, dpi=100)
        try:
            draw(ax)
            ax.set_title(title)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            self.items.append((title, buf.getvalue()))
        finally:
            plt.close(fig)

    def add_png(self, title: str, png: bytes) -> None:
        self.items.append((title, png))


def histogram(values: np.ndarray, selected: np.ndarray | None = None, *, xlabel: str, bins: int = 40):
    """A draw function: the pool's histogram with the selected rows' overlaid."""

    def draw(ax):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        edges = np.histogram_bin_edges(v, bins=bins) if len(v) else bins
        ax.hist(v, bins=edges, color=POOL, label="pool")
        if selected is not None and len(selected):
            s = np.asarray(selected, dtype=float)
            ax.hist(s[np.isfinite(s)], bins=edges, color=SELECTED, alpha=0.8, label="selected")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")

    return draw


def bars(counts: dict[str, float], *, xlabel: str):
    """A draw function: one horizontal bar per key."""

    def draw(ax):
        keys = list(counts)
        ax.barh(keys, [counts[k] for k in keys], color=POOL)
        ax.set_xlabel(xlabel)

    return draw


def radius_curve(radii: np.ndarray):
    """A draw function: the k-center coverage radius as centers are added."""

    def draw(ax):
        ax.plot(np.arange(1, len(radii) + 1), radii, color=SELECTED)
        ax.set_xlabel("centers")
        ax.set_ylabel("coverage radius")

    return draw


def scatter_map(xy: np.ndarray, selected: np.ndarray):
    """A draw function: 2-D points of the pool sample, the selected ones on top in red."""

    def draw(ax):
        ax.scatter(xy[~selected, 0], xy[~selected, 1], s=6, color=POOL, label="pool", linewidths=0)
        ax.scatter(xy[selected, 0], xy[selected, 1], s=12, color=SELECTED, label="selected", linewidths=0)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize="small")

    return draw


def grouped_bars(groups: dict[str, dict[str, float]], *, ylabel: str):
    """A draw function: for each group (x) one bar per series, e.g. {metric: {selection: v, random: v}}."""

    def draw(ax):
        names = list(groups)
        series = list(dict.fromkeys(s for g in groups.values() for s in g))
        width = 0.8 / max(1, len(series))
        colors = [SELECTED, RANDOM, POOL, "#5cb85c", "#f0ad4e", "#5bc0de", "#9467bd"]
        for i, s in enumerate(series):
            ax.bar(np.arange(len(names)) + i * width, [groups[g].get(s, np.nan) for g in names], width,
                   label=s, color=colors[i % len(colors)])
        ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")

    return draw
