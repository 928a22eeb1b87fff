"""run(cfg): read -> embed -> k-center -> score (SelectIT) / pick (SelectLLM) -> select -> write + report.

Every stage reads what the previous one produced. Stages with a checkpoint under the
output directory (embeddings/, kcenter/, scores/) reuse it when it is complete for the
same input and settings.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from selectray.config import RunConfig
from selectray.embed import embed_rows, read_embeddings
from selectray.errors import ConfigError, InputError
from selectray.io import Rows, read_rows, resolve_inputs
from selectray.kcenter_stage import Clusters, kcenter_stage, seed_ids
from selectray.metrics import coverage_stats
from selectray.report import Figures, StageTimer, bars, histogram, write_report
from selectray.score_stage import ModelScores, score_model
from selectray.select import (
    Selection,
    proportional_quotas,
    select_hybrid,
    select_length,
    select_random,
    top_scores,
)
from selectray.write import gather_lengths, write_rejected, write_selected

NEEDS_OUTPUT = {"selectit", "hybrid"}
NEEDS_EMBEDDINGS = {"kcenter", "selectllm", "hybrid"}


def run(cfg: RunConfig, *, quiet: bool = False, rescore: bool = False) -> dict:
    """Run one selection end to end; returns the report (also written to OUT/report.json).

    `rescore`: SelectIT levels from the cached probabilities only; a missing one is an error.
    """
    files = resolve_inputs(cfg.input, cfg.read.format)  # fail on a bad path before starting Ray
    seeds = seed_ids(cfg.kcenter)
    if seeds and cfg.method != "kcenter":
        raise ConfigError("kcenter.seeds apply to method kcenter only")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    gpus = connect(cfg)
    timer = StageTimer(quiet=quiet)
    figures = Figures()
    progress = cfg.ray.progress and not quiet
    late_rejects: dict[int, str] = {}

    with timer.stage("read") as st:
        rows = read_rows(cfg, files, need_output=cfg.method in NEEDS_OUTPUT)
        st.update(rows=rows.num_input, summary=f"{rows.num_input} rows, {rows.num_input - rows.num_usable} rejected,")
    budget = check_budget(cfg, rows, seeds)

    embeddings = emb_key = None
    if cfg.method in NEEDS_EMBEDDINGS or cfg.report.coverage:
        with timer.stage("embed", rows.num_usable) as st:
            manifest, st["reused"] = embed_rows(rows, cfg.embed, out, cuda=gpus)
            st["summary"] = f"{manifest['rows']} vectors,"
            embeddings, emb_key = out / "embeddings", manifest["key"]

    clusters = None
    if cfg.method == "kcenter" or cfg.method == "hybrid" or (cfg.method == "selectllm" and cfg.selectllm.grouping == "kcenter"):
        k = num_clusters(cfg, budget, len(seeds))
        with timer.stage("kcenter", rows.num_usable) as st:
            clusters = kcenter_stage(rows, embeddings, emb_key, k, cfg.kcenter, out, seeds=seeds, progress=progress, gpus=gpus)
            late_rejects.update(clusters.rejected)
            st.update(reused=clusters.reused, summary=f"k={k}, radius {clusters.radii[-1]:.3f},")

    scores = None
    if cfg.method in NEEDS_OUTPUT:
        with timer.stage("score", rows.num_usable) as st:
            scores = score_all(rows, cfg, out, gpus=gpus, rescore=rescore)
            for s in scores:
                late_rejects.update({int(p): "too_long" for p in np.flatnonzero(s.too_long)})
            st["summary"] = ", ".join(f"{s.name}: {s.computed_pairs} pairs scored" for s in scores) + ","

    pick_stats = None
    if cfg.method == "selectllm":
        from selectray.pick_stage import pick_stage

        with timer.stage("pick", rows.num_usable) as st:
            selection, pick_stats = pick_stage(rows, cfg, budget, clusters, embeddings, gpus=gpus, progress=progress)
            st["summary"] = f"{pick_stats.requests} rater requests, {pick_stats.fallbacks} fallbacks,"

    with timer.stage("select", rows.num_usable) as st:
        lengths = gather_lengths(rows)
        usable = np.ones(rows.num_usable, dtype=bool)
        usable[list(late_rejects)] = False
        if cfg.method != "selectllm":
            selection = choose(cfg, rows, budget, lengths, usable, clusters, scores)
        st["summary"] = f"{cfg.method}: {len(selection.positions)} of {int(usable.sum())},"

    with timer.stage("write") as st:
        n_selected = write_selected(rows, selection, out / "selected.parquet")
        n_rejected = write_rejected(rows, out / "rejected.parquet", late_rejects)
        st["rows"] = n_selected

    report = {
        "method": cfg.method,
        "input": cfg.input,
        "output": str(out),
        "input_rows": rows.num_input,
        "selected": n_selected,
        "not_selected": rows.num_usable - len(late_rejects) - n_selected,
        "rejected": n_rejected,
        "rejected_by_reason": reject_counts(rows, late_rejects),
        "budget": budget,
        "seed": cfg.seed,
        "stages": timer.stages,
        "selection": selection.stats,
        "length": {"pool_mean": float(lengths.mean()), "selected_mean": float(lengths[selection.positions].mean())},
    }
    figures.add("Row length (characters)", histogram(lengths, lengths[selection.positions], xlabel="characters"))
    if report["rejected_by_reason"]:
        figures.add("Rejected rows by reason", bars(report["rejected_by_reason"], xlabel="rows"))
    if clusters is not None:
        report["kcenter"] = cluster_report(clusters, figures)
    if scores is not None:
        report["selectit"] = score_report(scores, selection, cfg, figures)
    if pick_stats is not None:
        report["selectllm"] = {k: v for k, v in vars(pick_stats).items() if k != "answers"}
    if embeddings is not None:
        report["coverage"] = coverage(embeddings, selection, usable, cfg)
    write_report(out, report, figures)
    if not quiet:
        print(
            f"{rows.num_input} input rows = {n_selected} selected + {report['not_selected']} not selected "
            f"+ {n_rejected} rejected\noutputs: {out}/selected.parquet, rejected.parquet, report.json, report.html",
            flush=True,
        )
    return report


def num_clusters(cfg: RunConfig, budget: int, n_seeds: int) -> int:
    """k of the k-center stage for the configured method."""
    match cfg.method:
        case "kcenter":
            return n_seeds + budget
        case "selectllm":
            return math.ceil(budget / cfg.selectllm.picks)
        case "hybrid":
            return min(cfg.hybrid.num_clusters or max(1, budget // 5), budget)
        case other:
            raise ConfigError(f"method '{other}' uses no k-center clusters")


def choose(cfg: RunConfig, rows: Rows, budget: int, lengths: np.ndarray, usable: np.ndarray,
           clusters: Clusters | None, scores: list[ModelScores] | None) -> Selection:
    """Dispatch to the configured selection method (selectllm picks in its own stage)."""
    match cfg.method:
        case "random":
            return select_random(rows.ids, budget, cfg.seed)
        case "length":
            return select_length(lengths, budget)
        case "kcenter":
            chosen = clusters.centers[clusters.n_seeds:]
            return Selection(chosen, {"cluster_id": clusters.assignment, "distance": clusters.distance.astype(np.float32)},
                             stats={"radius": float(clusters.radii[-1])})
        case "selectit":
            levels = selectit_levels(scores, cfg)
            ranked = top_scores(np.where(usable, levels["score_model"], -np.inf), min(budget, int(usable.sum())))
            return Selection(ranked, levels)
        case "hybrid":
            levels = selectit_levels(scores, cfg)
            assignment = np.where(usable, clusters.assignment, -1)
            quotas = proportional_quotas(np.bincount(assignment[assignment >= 0], minlength=len(clusters.centers)),
                                         min(budget, int(usable.sum())))
            sel = select_hybrid(assignment, levels["score_model"], quotas)
            sel.columns = {**levels, "cluster_id": clusters.assignment}
            return sel
        case other:
            raise ConfigError(f"unknown method '{other}'")


def score_all(rows: Rows, cfg: RunConfig, out: Path, *, gpus: bool, rescore: bool) -> list[ModelScores]:
    from selectray.prompts import check_rating_prompts

    prompts = list(check_rating_prompts(cfg.selectit.prompts))
    names = [m.name for m in cfg.selectit.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"selectit.models names must be unique, got {names}")
    return [score_model(rows, m, cfg.selectit, prompts, out, cuda=gpus, cached_only=rescore) for m in cfg.selectit.models]


def selectit_levels(scores: list[ModelScores], cfg: RunConfig) -> dict[str, np.ndarray]:
    """Token, sentence and model levels as output columns (indexed by pos)."""
    from selectray.scoring import model_score, sentence_score, token_score

    cols: dict[str, np.ndarray] = {}
    sentences = []
    for s in scores:
        tok = token_score(s.probs, cfg.selectit.normalization)
        for k in range(tok.shape[1]):
            cols[f"score_token_{s.name}_p{k}"] = tok[:, k]
        sent = sentence_score(tok, cfg.selectit.alpha)
        cols[f"score_sentence_{s.name}"] = sent
        sentences.append(sent)
    cols["score_model"] = model_score(np.stack(sentences), [s.params for s in scores])
    return cols


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


def check_budget(cfg: RunConfig, rows: Rows, seeds: list[str]) -> int:
    """The number of rows to select, or a one-line error when the pool cannot supply it."""
    if rows.num_usable == 0:
        raise InputError(f"no usable rows: all {rows.num_input} input rows were rejected (see rejected.parquet)")
    budget = cfg.budget_for(rows.num_usable)
    if budget + len(seeds) > rows.num_usable:
        raise ConfigError(
            f"budget {budget} is more than the {rows.num_usable - len(seeds)} usable rows "
            f"({rows.num_input - rows.num_usable} rejected{f', {len(seeds)} seeds' if seeds else ''}); lower budget or proportion"
        )
    return budget


def reject_counts(rows: Rows, late: dict[int, str]) -> dict[str, int]:
    reasons = list(rows.rejected["_reject"].to_pylist()) if rows.rejected.num_rows else []
    reasons += list(late.values())
    values, counts = np.unique(np.asarray(reasons, dtype=object), return_counts=True) if reasons else ([], [])
    return {str(r): int(c) for r, c in zip(values, counts)}


def cluster_report(c: Clusters, figures: Figures) -> dict:
    sizes = c.sizes()
    figures.add("Coverage radius as centers are added", _radius_curve(c.radii))
    figures.add("Cluster sizes", histogram(sizes, xlabel="rows per cluster", bins=min(40, max(5, len(sizes) // 2))))
    return {"k": int(len(c.centers)), "seeds": c.n_seeds, "radius": float(c.radii[-1]), "passes": c.passes,
            "reused": c.reused, "cluster_size": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                                 "max": int(sizes.max())}}


def _radius_curve(radii: np.ndarray):
    def draw(ax):
        ax.plot(np.arange(1, len(radii) + 1), radii, color="#d9534f")
        ax.set_xlabel("centers")
        ax.set_ylabel("coverage radius")

    return draw


def score_report(scores: list[ModelScores], selection: Selection, cfg: RunConfig, figures: Figures) -> dict:
    levels = selectit_levels(scores, cfg)
    sm = levels["score_model"]
    figures.add("SelectIT model-level score", histogram(sm, sm[selection.positions], xlabel="score_model"))
    out = {"alpha": cfg.selectit.alpha, "normalization": cfg.selectit.normalization, "layout": cfg.selectit.layout,
           "models": {}}
    for s in scores:
        mass_out = s.other[np.isfinite(s.other)]
        figures.add(f"{s.name}: probability mass outside the ratings 1-5", histogram(mass_out, xlabel="p_other"))
        out["models"][s.name] = {"params": s.params, "pairs_scored_this_run": s.computed_pairs,
                                 "truncated_rows": int(s.truncated.sum()), "too_long_rows": int(s.too_long.sum()),
                                 "mean_p_other": float(mass_out.mean()) if len(mass_out) else None}
    finite = sm[np.isfinite(sm)]
    out["score_model"] = {"mean": float(finite.mean()), "selected_mean": float(sm[selection.positions].mean())}
    return out


def coverage(embeddings: Path, selection: Selection, usable: np.ndarray, cfg: RunConfig) -> dict:
    """Coverage of the pool by the selection, on a seeded sample, next to a random subset of the same size."""
    rng = np.random.default_rng(cfg.seed + 1)
    pool = np.flatnonzero(usable)
    sample = rng.choice(pool, size=min(len(pool), cfg.report.coverage_sample), replace=False)
    random_subset = rng.choice(pool, size=len(selection.positions), replace=False)
    wanted = np.unique(np.concatenate([sample, selection.positions, random_subset]))
    pos, vectors = read_embeddings(embeddings, wanted)
    lookup = np.empty(len(usable), dtype=np.int64)
    lookup[pos] = np.arange(len(pos))
    return coverage_stats(vectors[lookup[sample]], vectors[lookup[selection.positions]], vectors[lookup[random_subset]])
