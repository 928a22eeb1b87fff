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
import ray

from selectray.columns import POS
from selectray.groups import kcenter_groups
from selectray.stages.rater_client import HandleClient, HttpClient, PickStats, pick_groups
from selectray.stages.read import rows_at


@dataclass
class Picks:
    """The pick stage's result; arrays indexed by pos."""

    groups: list[np.ndarray]  # candidate positions shown, per group
    picked: list[np.ndarray]  # the rater's valid picks per group (may be fewer than asked)
    owner: np.ndarray  # the cluster (or region) of each row, -1 for none
    distance: np.ndarray  # each row's distance to its cluster's center (fallback order)
    group_of: np.ndarray  # the (first) group each row was shown in, -1 if never shown
    grouping: str
    stats: PickStats  # requests, tokens, each group's raw answer and status
    never_shown: int = 0  # usable rows no rater saw (in no group, or left out of a large region)

    def fallback_order(self, g: int) -> np.ndarray:
        """Group g's shown candidates, nearest to their center first (ties: position)."""
        members = self.groups[g]
        return members[np.lexsort((members, self.distance[members]))]


@ray.remote
def _texts(block, positions: np.ndarray, instruction: str, context: str | None):
    t = rows_at(block, [POS, instruction, *([context] if context else [])], positions)
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


def kmeans_groups(files, n_rows: int, r: int, n_regions: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The released code's k-means regions (selectray.groups), each shown as at most `r`
    candidates (a seeded sample stratified by distance to the centroid); also each row's
    region (the first, for the few rows padding puts in two) and its centroid distance."""
    from selectray.embeddings import read_embeddings
    from selectray.groups import kmeans_regions, stratified_sample

    pos, x = read_embeddings(files)
    regions, distance = kmeans_regions(x, n_regions, seed)
    regions = [pos[g] for g in regions]
    dist = np.full(n_rows, np.inf)
    dist[pos] = distance
    owner = np.full(n_rows, -1, dtype=np.int64)
    for g in range(len(regions) - 1, -1, -1):
        owner[regions[g]] = g
    rng = np.random.default_rng(seed)
    shown = [rng.permutation(stratified_sample(g, dist, r, rng)) for g in regions]
    return shown, owner, dist


def pick_stage(pool, sl, serve_cfg, budget: int, clusters, embeddings, seed: int, *, gpus: bool,
               progress: bool) -> Picks:
    """Rate every group (`sl`: the selectllm section) and return the picks per group."""
    if sl.grouping == "kcenter":
        groups = kcenter_groups(clusters.assignment, clusters.distance, len(clusters.centers), sl.candidates, seed)
        distance, owner = clusters.distance, clusters.assignment
    else:
        groups, owner, distance = kmeans_groups(embeddings.files(), pool.num_usable, sl.candidates,
                                                math.ceil(budget / sl.picks), seed)
    texts = gather_texts(pool, np.concatenate(groups))
    client, started = _client(sl, serve_cfg, gpus)
    try:
        picked, stats = asyncio.run(pick_groups(
            client, sl.model.name, groups, texts, picks=sl.picks, max_tokens=sl.max_tokens,
            max_in_flight=sl.max_in_flight, retries=sl.retries, progress=progress))
    finally:
        if started:
            from selectray import serve

            serve.stop()
    group_of = np.full(pool.num_usable, -1, dtype=np.int64)
    for g in range(len(groups) - 1, -1, -1):
        group_of[groups[g]] = g
    never_shown = int(((group_of < 0) & (owner >= 0)).sum())
    return Picks(groups, picked, owner, distance, group_of, sl.grouping, stats, never_shown)


def _client(sl, serve_cfg, gpus: bool):
    if sl.url:
        import os

        key = os.environ.get(sl.api_key_env) or None  # goes into the Authorization header only
        return HttpClient(sl.url, sl.timeout_s, api_key=key, key_env=sl.api_key_env, api=sl.api), False
    from selectray import serve

    models = serve_cfg.models or [sl.model]
    return HandleClient(serve.start(models, serve_cfg, gpus=gpus), api=sl.api), True


class PickStage:
    """The pick stage as a method declares it: fills `ctx.picks`."""

    name = "pick"

    def __call__(self, ctx) -> str:
        cfg = ctx.cfg
        ctx.picks = pick_stage(ctx.pool, cfg.selectllm, cfg.serve, ctx.budget, ctx.clusters, ctx.embeddings, cfg.seed,
                               gpus=ctx.gpus, progress=ctx.progress)
        return f"{ctx.picks.stats.requests} rater requests, {ctx.picks.stats.fallbacks} fallbacks,"
