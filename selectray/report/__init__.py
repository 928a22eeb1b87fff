"""The report of a run: report.json (numbers) and report.html (the same, readable), rebuildable.

* `timer`: stage wall times and throughput, as the pipeline runs;
* `collect`: at the end of a run, what the report needs goes to OUT/report_data/ (`data`);
* `assemble`: report.json and report.html from those files alone (`page` draws the HTML,
  `figures` the plots), so `selectray report OUT` rebuilds them without Ray or models;
* `compare`: several runs side by side (`selectray report OUT --compare OUT2`);
* `history`: stage throughputs kept per hardware, which `selectray plan` estimates from.
"""

from __future__ import annotations

from selectray.report.figures import Figures, histogram
from selectray.report.timer import StageTimer


def build_report(ctx, method, selection, stages: dict, n_selected: int, n_rejected: int) -> dict:
    """Keep the run's report data, write report.json and report.html; returns the report
    (see `selectray.report.collect.build_report`)."""
    from selectray.report.collect import build_report as build

    return build(ctx, method, selection, stages, n_selected, n_rejected)


__all__ = ["Figures", "StageTimer", "build_report", "histogram"]
