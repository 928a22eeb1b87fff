"""The files a run keeps so that its report can be rebuilt without Ray or models: OUT/report_data/.

    run.json        what the run was: config, counts, stage timings, the method's report
                    sections, coverage, the k-center run facts, the column mapping
    rows.parquet    one row per usable row (`pos`): id, length, calc, rank (null when not
                    selected), late_reject, and the per-row columns the stages and the method
                    produced (cluster_id, distance, group_id, picked_by, score_* levels,
                    p_other_<model>)
    groups.parquet  SelectLLM: per group its candidates, the rater's picks, raw answer, status
    centers.parquet k-center: order, pos, radius after the center was added, seed
    map.parquet     the 2-D map: pos, x, y (PCA of a seeded sample of embeddings + the selection)
    texts.parquet   the text of the rows the report shows (clipped), by pos
    figures/        PNGs a method's `report()` hook drew, listed in run.json

Pure pyarrow; read back by `selectray report OUT`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from selectray.errors import InputError
from selectray.storage import Location

FORMAT = 1
FOLDER = "report_data"
SHOWN = 20  # selected rows shown at the top and at the bottom of the ranking
CLUSTERS_SHOWN = 8  # largest clusters shown with examples
TEXT_CLIP = 4000  # characters of each text field kept for the report

# SelectIT's analysis reports the share of selected rows that involve calculation. Our rule,
# written into every report: an arithmetic expression in the instruction, input or
# response: a digit, an operator (+ * / × ÷ ^ =), a digit (spaces or tabs allowed around
# the operator), or a digit, a minus between spaces, a digit ("10 - 3"; "2020-2021" is not).
# ASCII digit classes so that RE2 (pyarrow) and Python's re agree.
CALC_PATTERN = r"[0-9][ \t]*[+*/×÷^=][ \t]*[0-9]|[0-9][ \t]+[-−][ \t]+[0-9]"
CALC_RULE = ("a row involves calculation when its instruction, input or response matches the regular expression "
             f"{CALC_PATTERN}: a digit, an arithmetic operator (+ * / × ÷ ^ =) and a digit, spaces allowed "
             "around the operator, or a minus between spaces (\"10 - 3\")")


def involves_calculation(text: str) -> bool:
    """The calculation rule for one text (Python's re; the run applies the same pattern with RE2)."""
    return re.search(CALC_PATTERN, text) is not None


@dataclass
class ReportData:
    """Everything a report is built from (see the module docstring)."""

    meta: dict
    rows: pa.Table
    groups: pa.Table | None = None
    centers: pa.Table | None = None
    map: pa.Table | None = None
    texts: pa.Table | None = None
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    _columns: dict = field(default_factory=dict, repr=False, compare=False)

    def column(self, name: str) -> np.ndarray | None:
        """A column of rows.parquet as numpy (object dtype for strings), None when absent (converted once)."""
        if name not in self.rows.column_names:
            return None
        if name not in self._columns:
            self._columns[name] = self.rows[name].to_numpy(zero_copy_only=False)
        return self._columns[name]

    def set_rows(self, rows: pa.Table) -> None:
        """Replace rows.parquet's table (and forget the columns converted from the old one)."""
        self.rows = rows
        self._columns.clear()

    def text_of(self) -> dict[int, dict]:
        """pos -> {instruction, input, output, clipped} of the rows whose text was kept."""
        if self.texts is None:
            return {}
        return {int(r["pos"]): r for r in self.texts.to_pylist()}


def write_data(out: Location, data: ReportData) -> None:
    """Write OUT/report_data/ (every file whole; run.json last, so it marks a complete set)."""
    folder = out / FOLDER
    for name in ("rows", "groups", "centers", "map", "texts"):
        table = getattr(data, name)
        target = folder / f"{name}.parquet"
        if table is not None:
            target.write_parquet(table)
        else:
            target.delete()
    titles = []
    for i, (title, png) in enumerate(data.figures):
        (folder / "figures" / f"{i:02d}.png").write_bytes(png)
        titles.append(title)
    (folder / "run.json").write_json({**data.meta, "format": FORMAT, "figures": titles})


def read_data(out: Location | str) -> ReportData:
    """Read OUT/report_data/; a one-line error when the folder is missing or from another format."""
    out = out if isinstance(out, Location) else Location(out)
    folder = out / FOLDER
    if not (folder / "run.json").is_file():
        raise InputError(f"{out} has no {FOLDER}/run.json: not a finished selectray run "
                         "(or one made before reports were rebuildable; run it again)")
    meta = (folder / "run.json").read_json()
    if meta.get("format") != FORMAT:
        raise InputError(f"{folder}: report data format {meta.get('format')} is not {FORMAT}; run it again")
    tables = {}
    for name in ("rows", "groups", "centers", "map", "texts"):
        f = folder / f"{name}.parquet"
        tables[name] = f.read_parquet() if f.is_file() else None
    if tables["rows"] is None:
        raise InputError(f"{folder} lacks rows.parquet")
    figures = [(t, (folder / "figures" / f"{i:02d}.png").read_bytes()) for i, t in enumerate(meta.get("figures", []))]
    return ReportData(meta, figures=figures, **tables)


# ---- which rows the report shows (decided before their texts are fetched, and again when rendered)

def ranked_selection(rank: np.ndarray) -> np.ndarray:
    """Positions of the selected rows, best rank first."""
    r = np.asarray(rank, dtype=float)
    chosen = np.flatnonzero(np.isfinite(r))
    return chosen[np.argsort(r[chosen], kind="stable")]


def shown_selected(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom): the first and the last SHOWN selected positions by rank (bottom: what is
    not already in top)."""
    order = ranked_selection(rank)
    top = order[:SHOWN]
    bottom = order[max(SHOWN, len(order) - SHOWN):]
    return top, bottom


def cluster_examples(cluster: np.ndarray, distance: np.ndarray, usable: np.ndarray,
                     centers: dict[int, int]) -> list[tuple[int, int, list[int]]]:
    """For the CLUSTERS_SHOWN largest clusters: (cluster id, size, example positions).

    Examples: the center (else the member nearest to it), the member at the median
    distance and the farthest member.
    """
    ok = usable & (cluster >= 0)
    if not ok.any():
        return []
    sizes = np.bincount(cluster[ok])
    ids = np.flatnonzero(sizes)
    ids = ids[np.lexsort((ids, -sizes[ids]))][:CLUSTERS_SHOWN]
    out = []
    for c in ids.tolist():
        members = np.flatnonzero(ok & (cluster == c))
        members = members[np.lexsort((members, distance[members]))]
        picks = [centers.get(c, int(members[0])), int(members[len(members) // 2]), int(members[-1])]
        out.append((c, int(sizes[c]), list(dict.fromkeys(picks))))
    return out


def center_map(centers: pa.Table | None) -> dict[int, int]:
    """cluster id (the center's order) -> the center's pos."""
    if centers is None:
        return {}
    return dict(zip(centers["order"].to_pylist(), centers["pos"].to_pylist()))


def shown_positions(data: ReportData) -> np.ndarray:
    """Every position whose text the report shows: the shown selected rows, the candidates of
    their SelectLLM groups, and the cluster examples."""
    rank = data.column("rank")
    top, bottom = shown_selected(rank)
    keep = [top, bottom]
    group = data.column("group_id")
    if group is not None and data.groups is not None:
        cands = data.groups["candidates"].to_pylist()
        for g in {int(group[p]) for p in np.concatenate([top, bottom]) if group[p] >= 0}:
            keep.append(np.asarray(cands[g], dtype=np.int64))
    cluster, distance = data.column("cluster_id"), data.column("distance")
    if cluster is not None and distance is not None:
        usable = usable_mask(data)
        for _, _, ex in cluster_examples(cluster, distance, usable, center_map(data.centers)):
            keep.append(np.asarray(ex, dtype=np.int64))
    return np.unique(np.concatenate(keep)).astype(np.int64) if keep else np.empty(0, np.int64)


def usable_mask(data: ReportData) -> np.ndarray:
    """Rows no later stage rejected (the pool the statistics compare the selection against)."""
    late = data.column("late_reject")
    return np.ones(data.rows.num_rows, bool) if late is None else np.asarray([x is None for x in late])
