"""SelectLLM pick stage: candidate groups -> one rater request per group (Ray Serve) -> picks per group.

Groups come from the k-center clusters (default) or from k-means regions
(selectray.groups). The rater app is started here (and stopped afterwards) unless
`selectllm.url` names a running one; requests go through `rater_client`. The method
(selectray.methods.selectllm) turns the picks into exactly `budget` rows.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from selectray.columns import POS
from selectray.groups import kcenter_groups, kmeans_regions
from selectray.stages.rater_client import HandleClient, HttpClient, PickStats, pick_groups


@dataclass
class Picks:
    """The pick stage's result; arrays indexed by pos."""

    groups: list[np.ndarray]  # candidate positions shown, per group
    picked: list[np.ndarray]  # chosen positions per group: the rater's picks, then fallbacks
    owner: np.ndarray  # the cluster (or region) of each row, -1 for none
    distance: np.ndarray  # each row's distance to its cluster's center (fallback order)
    group_of: np.ndarray  # the group each row was shown in, -1 if never shown
    grouping: str
    stats: PickStats


@ray.remote
def _texts(table: pa.Table, positions: np.ndarray, instruction: str, context: str | None):
    t = table.filter(pc.is_in(table[POS], pa.array(positions)))
    ctx = t[context].to_pylist() if context and context in t.column_names else [None] * t.num_rows
    return t[POS].to_pylist(), t[instruction].to_pylist(), ctx


def gather_texts(pool, positions: np.ndarray) -> dict[int, tuple[str, str | None]]:
    """(instruction, input) of the given rows, fetched from the row blocks."""
    cols = pool.columns
    ref = ray.put(np.unique(positions))
    out: dict[int, tuple[str, str | None]] = {}
    for pos, ins, ctx in ray.get([_texts.remote(b, ref, cols.instruction, cols.input) for b in pool.blocks]):
        out.update({p: (i, c) for p, i, c in zip(pos, ins, ctx)})
    return out


def kmeans_groups(files, n_rows: int, r: int, n_regions: int, seed: int, sample: int = 50_000):
    """k-means (r clusters, fitted on a seeded sample) and its regions; also each row's distance to its centroid."""
    from sklearn.cluster import KMeans

    from selectray.embeddings import iter_batches, read_embeddings
    from selectray.kcenter.distances import expand_dist, sq_norms

    rng = np.random.default_rng(seed)
    fit_pos = np.sort(rng.choice(n_rows, size=min(n_rows, sample), replace=False))
    _, fit = read_embeddings(files, fit_pos)
    centers = KMeans(n_clusters=min(r, len(fit)), random_state=seed, n_init="auto").fit(fit).cluster_centers_
    centers = centers.astype(np.float32)
    dist = np.zeros((n_rows, len(centers)), dtype=np.float32)
    for pos, v in iter_batches(files):
        dist[pos] = np.sqrt(expand_dist(v, sq_norms(v), centers, sq_norms(centers)))
    return kmeans_regions(dist, n_regions), dist.min(axis=1).astype(np.float64)


def pick_stage(pool, sl, serve_cfg, budget: int, clusters, embeddings, seed: int, *, gpus: bool,
               progress: bool) -> Picks:
    """Rate every group (`sl`: the selectllm section) and return the picks per group."""
    if sl.grouping == "kcenter":
        groups = kcenter_groups(clusters.assignment, clusters.distance, len(clusters.centers), sl.candidates, seed)
        distance, owner = clusters.distance, clusters.assignment
    else:
        groups, distance = kmeans_groups(embeddings.files(), pool.num_usable, sl.candidates,
                                         math.ceil(budget / sl.picks), seed)
        owner = np.full(pool.num_usable, -1, dtype=np.int64)
        for g, members in enumerate(groups):
            owner[members] = g
    fallback = [g[np.argsort(distance[g], kind="stable")] for g in groups]
    texts = gather_texts(pool, np.concatenate(groups))
    client, started = _client(sl, serve_cfg, gpus)
    try:
        picked, stats = asyncio.run(pick_groups(
            client, sl.model.name, groups, texts, fallback, picks=sl.picks, max_tokens=sl.max_tokens,
            max_in_flight=sl.max_in_flight, retries=sl.retries, progress=progress))
    finally:
        if started:
            from selectray import serve

            serve.stop()
    group_of = np.full(pool.num_usable, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
    return Picks(groups, picked, owner, distance, group_of, sl.grouping, stats)


def _client(sl, serve_cfg, gpus: bool):
    if sl.url:
        return HttpClient(sl.url, sl.timeout_s), False
    from selectray import serve

    models = serve_cfg.models or [sl.model]
    return HandleClient(serve.start(models, serve_cfg, gpus=gpus)), True


class PickStage:
    """The pick stage as a method declares it: fills `ctx.picks`."""

    name = "pick"

    def __call__(self, ctx) -> str:
        cfg = ctx.cfg
        ctx.picks = pick_stage(ctx.pool, cfg.selectllm, cfg.serve, ctx.budget, ctx.clusters, ctx.embeddings, cfg.seed,
                               gpus=ctx.gpus, progress=ctx.progress)
        return f"{ctx.picks.stats.requests} rater requests, {ctx.picks.stats.fallbacks} fallbacks,"
