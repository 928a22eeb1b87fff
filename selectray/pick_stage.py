"""SelectLLM stage: candidate groups -> rater picks (Ray Serve) -> exactly `budget` rows.

Groups come from the k-center clusters (default) or from k-means regions. The rater app
is started here (and stopped afterwards) unless `selectllm.url` names a running one.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from selectray.config import RunConfig
from selectray.groups import kcenter_groups, kmeans_regions
from selectray.io import POS, Rows
from selectray.kcenter_stage import Clusters
from selectray.pick import HandleClient, HttpClient, PickStats, pick_groups
from selectray.select import Selection


@ray.remote
def _texts(table: pa.Table, positions: np.ndarray, instruction: str, context: str | None):
    t = table.filter(pc.is_in(table[POS], pa.array(positions)))
    ctx = t[context].to_pylist() if context and context in t.column_names else [None] * t.num_rows
    return t[POS].to_pylist(), t[instruction].to_pylist(), ctx


def gather_texts(rows: Rows, positions: np.ndarray) -> dict[int, tuple[str, str | None]]:
    """(instruction, input) of the given rows, fetched from the row blocks."""
    cols = rows.columns
    ref = ray.put(np.unique(positions))
    out: dict[int, tuple[str, str | None]] = {}
    for pos, ins, ctx in ray.get([_texts.remote(b, ref, cols.instruction, cols.input) for b in rows.blocks]):
        out.update({p: (i, c) for p, i, c in zip(pos, ins, ctx)})
    return out


def kmeans_groups(emb_dir: Path, n_rows: int, r: int, n_regions: int, seed: int, sample: int = 50_000):
    """k-means (r clusters, fitted on a seeded sample) and its regions; also each row's distance to its centroid."""
    import pyarrow.dataset as pads
    from sklearn.cluster import KMeans

    from selectray.embed import EMBEDDING, read_embeddings

    rng = np.random.default_rng(seed)
    fit_pos = np.sort(rng.choice(n_rows, size=min(n_rows, sample), replace=False))
    _, fit = read_embeddings(emb_dir, fit_pos)
    centers = KMeans(n_clusters=min(r, len(fit)), random_state=seed, n_init="auto").fit(fit).cluster_centers_
    dist = np.zeros((n_rows, len(centers)), dtype=np.float32)
    for batch in pads.dataset(str(emb_dir), format="parquet").to_batches(columns=["pos", EMBEDDING]):
        col = batch.column(EMBEDDING)
        v = col.values.to_numpy(zero_copy_only=False).reshape(len(batch), -1).astype(np.float32)
        d2 = (v * v).sum(1)[:, None] - 2 * v @ centers.T.astype(np.float32) + (centers * centers).sum(1)[None, :]
        dist[batch.column("pos").to_numpy()] = np.sqrt(np.maximum(d2, 0))
    return kmeans_regions(dist, n_regions), dist.min(axis=1).astype(np.float64)


def pick_stage(rows: Rows, cfg: RunConfig, budget: int, clusters: Clusters | None, emb_dir: Path, *,
               gpus: bool, progress: bool) -> tuple[Selection, PickStats]:
    """Rate every group and return exactly `budget` rows (when the pool has that many)."""
    sl = cfg.selectllm
    if sl.grouping == "kcenter":
        groups = kcenter_groups(clusters.assignment, clusters.distance, len(clusters.centers), sl.candidates, cfg.seed)
        distance, owner = clusters.distance, clusters.assignment
    else:
        groups, distance = kmeans_groups(emb_dir, rows.num_usable, sl.candidates, math.ceil(budget / sl.picks), cfg.seed)
        owner = np.full(rows.num_usable, -1, dtype=np.int64)
        for g, members in enumerate(groups):
            owner[members] = g
    fallback = [g[np.argsort(distance[g], kind="stable")] for g in groups]
    texts = gather_texts(rows, np.concatenate(groups))
    client, started = _client(cfg, gpus)
    try:
        picked, stats = asyncio.run(pick_groups(
            client, sl.model.name, groups, texts, fallback, picks=sl.picks, max_tokens=sl.max_tokens,
            max_in_flight=sl.max_in_flight, retries=sl.retries, progress=progress))
    finally:
        if started:
            from selectray import serve

            serve.stop()
    chosen = exact_budget(picked, owner, distance, budget)
    group_of = np.full(rows.num_usable, -1, dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
    stats_dict = {"groups": len(groups), "grouping": sl.grouping, "fallbacks": stats.fallbacks}
    return Selection(chosen, {"cluster_id": owner, "group_id": group_of}, stats=stats_dict), stats


def _client(cfg: RunConfig, gpus: bool):
    if cfg.selectllm.url:
        return HttpClient(cfg.selectllm.url, cfg.selectllm.timeout_s), False
    from selectray import serve

    models = cfg.serve.models or [cfg.selectllm.model]
    if cfg.selectllm.model.name not in {m.name for m in models}:
        from selectray.errors import ConfigError

        raise ConfigError(f"selectllm.model '{cfg.selectllm.model.name}' is not among serve.models")
    return HandleClient(serve.start(models, cfg.serve, gpus=gpus)), True


def exact_budget(picked: list[np.ndarray], owner: np.ndarray, distance: np.ndarray, budget: int) -> np.ndarray:
    """Picks in rank order (every group's first pick, then every second pick, ...), cut or topped up to `budget`.

    A shortfall (groups smaller than the picks asked of them) is filled from the largest
    clusters, one row per cluster in turn, nearest to its center first.
    """
    depth = max((len(p) for p in picked), default=0)
    ranked = [int(p[d]) for d in range(depth) for p in picked if d < len(p)]
    ranked = list(dict.fromkeys(ranked))[:budget]
    if len(ranked) < budget:
        taken = np.zeros(len(owner), dtype=bool)
        taken[ranked] = True
        valid = np.flatnonzero((owner >= 0) & ~taken)
        queues = {}
        for c in np.unique(owner[valid]):
            members = valid[owner[valid] == c]
            queues[int(c)] = list(members[np.argsort(distance[members], kind="stable")])
        order = sorted(queues, key=lambda c: (-len(queues[c]), c))
        while len(ranked) < budget and any(queues[c] for c in order):
            for c in order:
                if queues[c] and len(ranked) < budget:
                    ranked.append(int(queues[c].pop(0)))
    return np.asarray(ranked, dtype=np.int64)
