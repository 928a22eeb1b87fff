"""At the end of a run: gather what the report needs from the run's context (OUT/report_data/),
then build report.json and report.html from those files alone (selectray.report.assemble).

The only Ray work here is one pass over the row blocks for the calculation flag of every
row and the text of the rows the report shows; the 2-D map reads the embeddings checkpoint.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectray.columns import CLUSTER, DISTANCE, GROUP, ID, POS, RANK
from selectray.report.data import CALC_PATTERN, TEXT_CLIP, ReportData, shown_positions, write_data
from selectray.report.figures import Figures

MAP_SAMPLE = 2000  # pool rows on the 2-D map (a seeded sample), and at most as many selected rows
RESERVED = {POS, ID, RANK, "length", "calc", "late_reject"}


def build_report(ctx, method, selection, stages: dict, n_selected: int, n_rejected: int) -> dict:
    """Keep the run's report data in OUT/report_data/, write report.json and report.html from it,
    and add this run's stage throughputs to the history `selectray plan` reads; returns the report."""
    from selectray.coverage import coverage, coverage_rows
    from selectray.report.assemble import render
    from selectray.report.history import record_run

    cfg = ctx.cfg
    figures = Figures()
    sections = method.report(ctx, selection, figures)
    meta = {
        "method": cfg.method, "input": cfg.input, "output": ctx.out.uri, "seed": cfg.seed, "budget": ctx.budget,
        "config": cfg.model_dump(mode="json"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input_rows": ctx.pool.num_input, "selected": n_selected, "rejected": n_rejected,
        "rejected_by_reason": _reject_counts(ctx), "stages": stages, "selection": selection.stats,
        "sections": sections, "pool_fingerprint": ctx.pool.fingerprint,
        "columns": {"instruction": ctx.pool.columns.instruction, "input": ctx.pool.columns.input,
                    "output": ctx.pool.columns.output},
    }
    if ctx.clusters is not None:
        c = ctx.clusters
        meta["kcenter"] = {"seeds": int(c.n_seeds), "passes": int(c.passes), "reused": bool(c.reused)}
    if ctx.embeddings is not None:
        map_rows = _map_rows(ctx, selection)
        read = vectors_at(ctx.embeddings, np.concatenate([
            coverage_rows(selection.positions, ctx.usable(), cfg.report.coverage_sample, cfg.seed).all(), *map_rows]))
        meta["coverage"] = coverage(ctx.embeddings, selection.positions, ctx.usable(), cfg.report.coverage_sample,
                                    cfg.seed, read=read)
    data = ReportData(meta, _rows(ctx, selection), groups=_groups(ctx.picks), centers=_centers(ctx.clusters),
                      figures=figures.items)
    calc, texts = _scan_blocks(ctx.pool, shown_positions(data))
    data.set_rows(data.rows.set_column(data.rows.column_names.index("calc"), "calc", pa.array(calc)))
    data.texts = texts
    if ctx.embeddings is not None:
        data.map, meta["map_explained_variance"] = pca_map(ctx.embeddings.files(), *map_rows, read=read)
    write_data(ctx.out, data)
    report = render(ctx.out, data)
    record_run(ctx, stages)
    return report


def _map_rows(ctx, selection) -> tuple[np.ndarray, np.ndarray]:
    """(the pool sample, the selected rows) the 2-D map shows."""
    from selectray.coverage import coverage_rows

    cfg = ctx.cfg
    if ctx.embeddings.complete:
        rng = np.random.default_rng(cfg.seed + 2)
        usable = np.flatnonzero(ctx.usable())
        return rng.choice(usable, size=min(len(usable), MAP_SAMPLE), replace=False), selection.positions[:MAP_SAMPLE]
    # Only the coverage figure's rows were embedded (the method needs no embeddings).
    rows = coverage_rows(selection.positions, ctx.usable(), cfg.report.coverage_sample, cfg.seed)
    return rows.sample[:MAP_SAMPLE], rows.selected[:MAP_SAMPLE]


def vectors_at(embeddings, positions: np.ndarray):
    """`read(positions) -> (pos, vectors)` over one pass of the checkpoint that reads all of `positions`."""
    from selectray.embeddings import read_embeddings

    all_pos, all_vec = read_embeddings(embeddings.files(), positions)

    def read(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = np.unique(np.asarray(wanted, dtype=np.int64))
        at = np.minimum(np.searchsorted(all_pos, want), max(len(all_pos) - 1, 0))
        if len(want) and (not len(all_pos) or (all_pos[at] != want).any()):
            raise RuntimeError("the embeddings checkpoint lacks rows the report reads")
        return all_pos[at], all_vec[at]

    return read


def _reject_counts(ctx) -> dict[str, int]:
    from selectray.stages.write import reject_counts

    return reject_counts(ctx.pool, ctx.rejects.late)


def _rows(ctx, selection) -> pa.Table:
    """One row per usable row: the ids, lengths, rank and every per-row column of the run."""
    n = ctx.pool.num_usable
    rank = np.full(n, -1, dtype=np.int64)
    rank[selection.positions] = np.arange(1, len(selection.positions) + 1)
    late = np.full(n, None, dtype=object)
    for p, reason in ctx.rejects.late.items():
        late[p] = reason
    cols: dict[str, pa.Array] = {
        POS: pa.array(np.arange(n, dtype=np.int64)), ID: ctx.pool.ids.cast(pa.string()),
        "length": pa.array(np.asarray(ctx.lengths, dtype=np.int64)),
        "calc": pa.array(np.zeros(n, bool)),  # filled by the pass over the blocks
        RANK: pa.array(rank, mask=rank < 0), "late_reject": pa.array(late.tolist(), pa.string()),
    }
    if ctx.clusters is not None:
        cols[CLUSTER] = pa.array(np.asarray(ctx.clusters.assignment, dtype=np.int64))
        cols[DISTANCE] = pa.array(np.asarray(ctx.clusters.distance, dtype=np.float64))
    if ctx.picks is not None:
        p = ctx.picks
        cols[CLUSTER] = pa.array(np.asarray(p.owner, dtype=np.int64))
        cols[DISTANCE] = pa.array(np.asarray(p.distance, dtype=np.float64))
        cols[GROUP] = pa.array(np.asarray(p.group_of, dtype=np.int64))
    if ctx.scores is not None:
        for m in ctx.scores.models:
            with np.errstate(invalid="ignore"):
                other = np.nanmean(np.where(np.isfinite(m.other), m.other, np.nan), axis=1) if m.other.size else m.other
            cols[f"p_other_{m.name}"] = pa.array(np.asarray(other, dtype=np.float64))
    for name, values in selection.columns.items():
        if name not in RESERVED and len(values) == n:
            v = np.asarray(values)
            cols[name] = pa.array(v.tolist() if v.dtype == object else v, from_pandas=True)
    return pa.table(cols)


def _groups(picks) -> pa.Table | None:
    if picks is None:
        return None
    n = len(picks.groups)
    stats = picks.stats
    return pa.table({
        "group_id": pa.array(np.arange(n, dtype=np.int64)),
        "candidates": pa.array([np.asarray(g, dtype=np.int64).tolist() for g in picks.groups], pa.list_(pa.int64())),
        "picked": pa.array([np.asarray(g, dtype=np.int64).tolist() for g in picks.picked], pa.list_(pa.int64())),
        "answer": pa.array(list(stats.answers) if len(stats.answers) == n else [None] * n, pa.string()),
        "status": pa.array(list(stats.status) if len(stats.status) == n else [None] * n, pa.string()),
    })


def _centers(clusters) -> pa.Table | None:
    if clusters is None:
        return None
    k = len(clusters.centers)
    return pa.table({"order": np.arange(k, dtype=np.int64), POS: np.asarray(clusters.centers, dtype=np.int64),
                     "radius": np.asarray(clusters.radii, dtype=np.float64), "seed": np.arange(k) < clusters.n_seeds})


def _scan_blocks(pool, shown: np.ndarray) -> tuple[np.ndarray, pa.Table]:
    """(calc flag of every usable row, the clipped texts of the `shown` rows), one task per block."""
    import ray

    cols = pool.columns
    names = [c for c in (cols.instruction, cols.input, cols.output)]
    scan = ray.remote(_scan_block)
    ref = ray.put(np.asarray(shown, dtype=np.int64))
    calc = np.zeros(pool.num_usable, dtype=bool)
    parts = []
    for pos, flags, texts in ray.get([scan.remote(b, names, ref) for b in pool.blocks]):
        calc[pos] = flags
        parts.append(texts)
    texts = pa.concat_tables(parts).sort_by(POS) if parts else None
    return calc, texts


def _text(table: pa.Table, name: str | None) -> pa.Array:
    if not name or name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    col = table[name].combine_chunks()
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _scan_block(block, names: list, shown: np.ndarray):
    from selectray.stages.read_files import open_block

    table = open_block(block, [*[n for n in names if n], ID, POS])
    pos = table[POS].to_numpy()
    fields = [_text(table, n) for n in names]
    calc = np.zeros(table.num_rows, dtype=bool)
    for f in fields:
        calc |= pc.fill_null(pc.match_substring_regex(f, CALC_PATTERN), False).to_numpy(zero_copy_only=False)
    keep = pa.array(np.isin(pos, shown))
    out = {POS: pa.array(pos).filter(keep), ID: _text(table, ID).filter(keep)}
    clipped = np.zeros(int(keep.true_count), dtype=bool)
    for label, f in zip(("instruction", "input", "output"), fields):
        f = f.filter(keep)
        clipped |= pc.fill_null(pc.greater(pc.utf8_length(f), TEXT_CLIP), False).to_numpy(zero_copy_only=False)
        out[label] = pc.utf8_slice_codeunits(f, 0, TEXT_CLIP)
    out["clipped"] = pa.array(clipped)
    return pos, calc, pa.table(out)


def pca_map(files, sample: np.ndarray, selected: np.ndarray, read=None) -> tuple[pa.Table | None, list[float]]:
    """2-D coordinates of the `sample` of the pool and the `selected` rows (PCA by SVD of the sample),
    and the share of the sample's variance the two axes explain. `read` as in `coverage`."""
    from selectray.embeddings import read_embeddings

    wanted = np.union1d(np.asarray(sample, dtype=np.int64), np.asarray(selected, dtype=np.int64))
    pos, x = (read or (lambda p: read_embeddings(files, p)))(wanted)
    if len(pos) < 3:
        return None, []
    in_sample = np.isin(pos, sample)
    base = x[in_sample] if in_sample.sum() >= 3 else x
    mean = base.mean(axis=0)
    _, s, vt = np.linalg.svd(base - mean, full_matrices=False)
    xy = (x - mean) @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.column_stack([xy, np.zeros(len(xy))])
    var = (s**2) / max((s**2).sum(), 1e-30)
    table = pa.table({POS: pos, "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64),
                      "in_sample": in_sample})
    return table, [float(v) for v in var[:2]]
