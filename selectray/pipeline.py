"""run(cfg): read -> embed -> k-center -> score/pick -> select -> write + report.

Every stage reads what the previous one produced; stages with a checkpoint folder
under the output directory are skipped when their checkpoint is complete for
the same input and settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from selectray.config import RunConfig
from selectray.embed import embed_rows, read_embeddings
from selectray.errors import ConfigError, InputError
from selectray.io import Rows, read_rows, resolve_inputs
from selectray.metrics import coverage_stats
from selectray.report import Figures, StageTimer, bars, histogram, write_report
from selectray.select import Selection, select_length, select_random
from selectray.write import gather_lengths, write_rejected, write_selected

NEEDS_OUTPUT = {"selectit", "hybrid"}
NEEDS_EMBEDDINGS = {"kcenter", "selectllm", "hybrid"}
BUILT = {"random", "length"}


def run(cfg: RunConfig, *, quiet: bool = False) -> dict:
    """Run one selection end to end; returns the report (also written to OUT/report.json)."""
    if cfg.method not in BUILT:
        raise ConfigError(f"method '{cfg.method}' is not available yet; choose one of: {', '.join(sorted(BUILT))}")
    files = resolve_inputs(cfg.input, cfg.read.format)  # fail on a bad path before starting Ray
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cuda = connect(cfg)
    timer = StageTimer(quiet=quiet)
    figures = Figures()

    with timer.stage("read") as st:
        rows = read_rows(cfg, files, need_output=cfg.method in NEEDS_OUTPUT)
        rejected = rows.num_input - rows.num_usable
        st.update(rows=rows.num_input, summary=f"{rows.num_input} rows, {rejected} rejected,")
    n_rejected = write_rejected(rows, out / "rejected.parquet")
    budget = check_budget(cfg, rows)

    embeddings = None
    if cfg.method in NEEDS_EMBEDDINGS or cfg.report.coverage:
        with timer.stage("embed", rows.num_usable) as st:
            manifest, st["reused"] = embed_rows(rows, cfg.embed, out, cuda=cuda)
            st["summary"] = f"{manifest['rows']} vectors,"
            embeddings = out / "embeddings"

    with timer.stage("select", rows.num_usable) as st:
        lengths = gather_lengths(rows)
        selection = choose(cfg, rows, budget, lengths)
        st["summary"] = f"{cfg.method}: {len(selection.positions)} of {rows.num_usable},"

    with timer.stage("write") as st:
        n_selected = write_selected(rows, selection, out / "selected.parquet")
        st["rows"] = n_selected

    report = {
        "method": cfg.method,
        "input": cfg.input,
        "output": str(out),
        "input_rows": rows.num_input,
        "selected": n_selected,
        "not_selected": rows.num_usable - n_selected,
        "rejected": n_rejected,
        "rejected_by_reason": reject_counts(rows),
        "budget": budget,
        "seed": cfg.seed,
        "stages": timer.stages,
        "selection": selection.stats,
        "length": {"pool_mean": float(lengths.mean()), "selected_mean": float(lengths[selection.positions].mean())},
    }
    figures.add("Row length (characters)", histogram(lengths, lengths[selection.positions], xlabel="characters"))
    if report["rejected_by_reason"]:
        figures.add("Rejected rows by reason", bars(report["rejected_by_reason"], xlabel="rows"))
    if embeddings is not None:
        report["coverage"] = coverage(embeddings, selection, rows.num_usable, cfg)
    write_report(out, report, figures)
    if not quiet:
        print(
            f"{rows.num_input} input rows = {n_selected} selected + {report['not_selected']} not selected "
            f"+ {n_rejected} rejected\noutputs: {out}/selected.parquet, rejected.parquet, report.json, report.html",
            flush=True,
        )
    return report


def choose(cfg: RunConfig, rows: Rows, budget: int, lengths: np.ndarray) -> Selection:
    """Dispatch to the configured selection method."""
    match cfg.method:
        case "random":
            return select_random(rows.ids, budget, cfg.seed)
        case "length":
            return select_length(lengths, budget)
        case other:
            raise ConfigError(f"method '{other}' is not available yet")


def connect(cfg: RunConfig) -> bool:
    """Attach to the configured Ray cluster (or start a local one); True when it has GPUs."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(
            address=cfg.ray.address,
            num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    ray.data.DataContext.get_current().enable_progress_bars = cfg.ray.progress
    return ray.cluster_resources().get("GPU", 0) > 0


def check_budget(cfg: RunConfig, rows: Rows) -> int:
    """The number of rows to select, or a one-line error when the pool cannot supply it."""
    if rows.num_usable == 0:
        raise InputError(f"no usable rows: all {rows.num_input} input rows were rejected (see rejected.parquet)")
    budget = cfg.budget_for(rows.num_usable)
    if budget > rows.num_usable:
        raise ConfigError(
            f"budget {budget} is more than the {rows.num_usable} usable rows "
            f"({rows.num_input - rows.num_usable} rejected); lower budget or proportion"
        )
    return budget


def reject_counts(rows: Rows) -> dict[str, int]:
    if rows.rejected.num_rows == 0:
        return {}
    reasons, counts = np.unique(np.asarray(rows.rejected["_reject"].to_pylist(), dtype=object), return_counts=True)
    return {str(r): int(c) for r, c in zip(reasons, counts)}


def coverage(embeddings: Path, selection: Selection, num_rows: int, cfg: RunConfig) -> dict:
    """Coverage of the pool by the selection, on a seeded sample, next to a random subset of the same size."""
    rng = np.random.default_rng(cfg.seed + 1)
    sample = rng.choice(num_rows, size=min(num_rows, cfg.report.coverage_sample), replace=False)
    random_subset = rng.choice(num_rows, size=len(selection.positions), replace=False)
    wanted = np.unique(np.concatenate([sample, selection.positions, random_subset]))
    pos, vectors = read_embeddings(embeddings, wanted)
    lookup = np.empty(num_rows, dtype=np.int64)
    lookup[pos] = np.arange(len(pos))
    return coverage_stats(vectors[lookup[sample]], vectors[lookup[selection.positions]], vectors[lookup[random_subset]])
