"""run(cfg): read -> embed -> k-center -> the method's stages (score / pick) -> select -> write + report.

Every stage reads what the previous ones put in the run's context. The method
(selectray.methods) declares what it needs, and this function runs exactly that; it
never asks which method is running. Stages with a checkpoint under the output
directory (embeddings/, kcenter/, scores/) reuse or resume it (selectray.checkpoint).
"""

from __future__ import annotations

from selectray.context import RunContext
from selectray.coverage import coverage_rows
from selectray.errors import ConfigError, InputError
from selectray.export import export_selection
from selectray.methods import METHODS
from selectray.models import pin_models
from selectray.report import StageTimer, build_report
from selectray.session import check_output_shared, connect
from selectray.stages.embed import embed_stage
from selectray.stages.kcenter import kcenter_stage, seed_ids
from selectray.stages.read import read_pool, resolve_inputs
from selectray.stages.selection import check_selection
from selectray.stages.write import gather_lengths, write_rejected, write_selected
from selectray.storage import prepare_output


def run(cfg, *, quiet: bool = False, rescore: bool = False) -> dict:
    """Run one selection end to end; returns the report (also written to OUT/report.json).

    `rescore`: SelectIT levels from the cached probabilities only; a missing one is an error.
    """
    method = METHODS[cfg.method]
    files = resolve_inputs(cfg.input, cfg.read.format)  # a bad path fails before Ray starts
    out = prepare_output(cfg.output)
    cfg = pin_models(cfg)  # every node loads the same hub commit
    ctx = RunContext(cfg, out, gpus=connect(cfg.ray), progress=cfg.ray.progress and not quiet, rescore=rescore,
                     seeds=seed_ids(cfg.kcenter))
    check_output_shared(out)
    timer = StageTimer(quiet=quiet)

    with timer.stage("read") as st:
        ctx.pool = read_pool(files, cfg.columns, cfg.read, need_output=method.needs_responses, progress=ctx.progress)
        rejected = ctx.pool.num_input - ctx.pool.num_usable
        st.update(rows=ctx.pool.num_input, summary=f"{ctx.pool.num_input} rows, {rejected} rejected,")
    ctx.budget = check_budget(cfg, ctx.pool, ctx.seeds)
    usable_rows = ctx.pool.num_usable

    if method.needs_embeddings:
        with timer.stage("embed", usable_rows) as st:
            ctx.embeddings = embed_stage(ctx.pool, cfg.embed, out, gpus=ctx.gpus, progress=ctx.progress)
            _embed_summary(st, ctx.embeddings)

    k = method.clusters(cfg, ctx.budget)
    if k is not None:
        with timer.stage("kcenter", usable_rows) as st:
            ctx.clusters = kcenter_stage(ctx.pool, ctx.embeddings, k, cfg.kcenter, out, seeds=ctx.seeds,
                                         progress=ctx.progress, gpus=ctx.gpus)
            ctx.rejects.add_reasons(ctx.clusters.rejected)
            st.update(reused=ctx.clusters.reused, summary=f"k={k}, radius {ctx.clusters.radii[-1]:.3f},")

    for stage in method.stages:
        with timer.stage(stage.name, usable_rows) as st:
            st["summary"] = stage(ctx)

    with timer.stage("select", usable_rows) as st:
        ctx.lengths = gather_lengths(ctx.pool)
        usable = ctx.usable()
        selection = check_selection(method.select(ctx, usable), usable, ctx.budget)
        st["summary"] = f"{cfg.method}: {len(selection.positions)} of {int(usable.sum())},"

    if cfg.report.coverage and ctx.embeddings is None:
        # The method needs no embeddings: embed only the rows the coverage figure reads.
        rows = coverage_rows(selection.positions, usable, cfg.report.coverage_sample, cfg.seed)
        with timer.stage("embed", len(rows.all())) as st:
            ctx.embeddings = embed_stage(ctx.pool, cfg.embed, out, gpus=ctx.gpus, positions=rows.all(),
                                         progress=ctx.progress)
            _embed_summary(st, ctx.embeddings, "for the coverage figure")

    with timer.stage("write") as st:
        n_selected = write_selected(ctx.pool, selection, out / "selected.parquet")
        n_rejected = write_rejected(ctx.pool, out / "rejected.parquet", ctx.rejects.late)
        st["rows"] = n_selected

    report = build_report(ctx, method, selection, timer.stages, n_selected, n_rejected)
    exported = [export_selection(out.uri, fmt)[0] for fmt in cfg.write.export]  # reads the files just written
    if not quiet:
        print(
            f"{ctx.pool.num_input} input rows = {n_selected} selected + {report['not_selected']} not selected "
            f"+ {n_rejected} rejected\noutputs: {out}/selected.parquet, rejected.parquet, report.json, report.html"
            + "".join(f", {e.rsplit('/', 1)[-1]}" for e in exported),
            flush=True,
        )
    return report


def _embed_summary(st: dict, e, note: str = "") -> None:
    st.update(reused=e.computed == 0, computed_rows=e.computed, reused_rows=e.reused, pool_embedded=e.complete,
              summary=f"{e.rows} vectors ({e.computed} computed, {e.reused} reused{', ' + note if note else ''}),")


def check_budget(cfg, pool, seeds: list[str]) -> int:
    """The number of rows to select, or a one-line error when the pool cannot supply it."""
    if pool.num_usable == 0:
        raise InputError(f"no usable rows: all {pool.num_input} input rows were rejected (see rejected.parquet)")
    budget = cfg.budget_for(pool.num_usable)
    if budget + len(seeds) > pool.num_usable:
        raise ConfigError(
            f"budget {budget} is more than the {pool.num_usable - len(seeds)} usable rows "
            f"({pool.num_input - pool.num_usable} rejected{f', {len(seeds)} seeds' if seeds else ''}); lower budget or proportion"
        )
    return budget
