"""k-center stage: the sharded greedy k-center over the embeddings checkpoint, checkpointed in OUT/kcenter/.

`kcenter/centers.parquet`: `order`, `pos`, `id`, `radius` (coverage radius once this
center is added), `seed`. `kcenter/assignment.parquet`: `id`, `pos`, `cluster_id`
(order of the nearest center, -1 for a rejected row) and `distance`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectray.checkpoint import Checkpoint, fingerprint
from selectray.config import KCenterConfig
from selectray.io import Rows


@dataclass
class Clusters:
    centers: np.ndarray  # pos of each center, in the order chosen
    radii: np.ndarray  # coverage radius after each center
    assignment: np.ndarray  # per pos: cluster id (index into centers), -1 if rejected
    distance: np.ndarray  # per pos: distance to its center
    n_seeds: int
    rejected: dict[int, str]  # pos -> reason (rows whose vectors cannot be used)
    reused: bool
    passes: int = 0

    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignment[self.assignment >= 0], minlength=len(self.centers))


def seed_ids(cfg: KCenterConfig) -> list[str]:
    """Seed ids from the config list and the seeds file, in order, without repeats."""
    ids = list(cfg.seeds)
    if cfg.seeds_file:
        from selectray.errors import ConfigError

        try:
            ids += [line.strip() for line in Path(cfg.seeds_file).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise ConfigError(f"kcenter.seeds_file {cfg.seeds_file}: {e.strerror}") from None
    return list(dict.fromkeys(ids))


def kcenter_stage(rows: Rows, emb_dir: Path, emb_key: str, k: int, cfg: KCenterConfig, out: Path,
                  *, seeds: list[str], progress: bool, gpus: bool) -> Clusters:
    """Run (or reuse) greedy k-center with k centers, seeds first."""
    from selectray.cluster import distributed_k_center, seed_positions

    key = fingerprint("kcenter", emb_key, k, seeds, cfg.mode, cfg.num_shards if cfg.mode == "composable" else None)
    ck = Checkpoint(out / "kcenter", key, k=k, mode=cfg.mode, seeds=len(seeds))
    if ck.is_complete():
        return _load(ck.folder, rows.num_usable, len(seeds))
    seed_pos = seed_positions(emb_dir, seeds) if seeds else ()
    result = distributed_k_center(emb_dir, k, num_shards=cfg.num_shards, seeds=seed_pos, mode=cfg.mode,
                                  progress=progress, num_gpus_per_shard=1 if gpus else 0)
    tmp = ck.begin()
    centers = result.centers.astype(np.int64)
    pq.write_table(pa.table({
        "order": np.arange(len(centers), dtype=np.int64), "pos": centers, "id": rows.ids[centers].astype(str),
        "radius": result.radii.astype(np.float64), "seed": np.arange(len(centers)) < result.n_seeds,
    }), tmp / "centers.parquet")
    reasons = np.full(rows.num_usable, None, dtype=object)
    reasons[result.rejected_pos] = result.rejected_reason
    pq.write_table(pa.table({
        "id": rows.ids.astype(str), "pos": np.arange(rows.num_usable, dtype=np.int64),
        "cluster_id": result.assignment.astype(np.int64), "distance": result.distance.astype(np.float32),
        "reject": pa.array(reasons.tolist(), pa.string()),
    }), tmp / "assignment.parquet")
    ck.commit(passes=int(result.passes))
    return Clusters(centers, result.radii, result.assignment.astype(np.int64), result.distance.astype(np.float64),
                    result.n_seeds, result.rejected, reused=False, passes=int(result.passes))


def _load(folder: Path, n: int, n_seeds: int) -> Clusters:
    c = pq.read_table(folder / "centers.parquet").sort_by("order")
    a = pq.read_table(folder / "assignment.parquet").sort_by("pos")
    if a.num_rows != n:
        raise ValueError(f"k-center checkpoint {folder} has {a.num_rows} rows, expected {n}")
    reject = a["reject"].to_pylist()
    rejected = {i: r for i, r in enumerate(reject) if r is not None}
    return Clusters(c["pos"].to_numpy(), c["radius"].to_numpy(), a["cluster_id"].to_numpy(),
                    a["distance"].to_numpy().astype(np.float64), n_seeds, rejected, reused=True)
