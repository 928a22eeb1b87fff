"""k-center stage: the sharded greedy k-center over the embeddings checkpoint, checkpointed in OUT/kcenter/.

Two parts (selectray.checkpoint): `centers.parquet` (`order`, `pos`, `id`, `radius`
once this center is added, `seed`) and `assignment.parquet` (`id`, `pos`,
`cluster_id`: order of the nearest center, -1 for a rejected row; `distance`;
`reject`: why a row's vector could not be used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from selectray.checkpoint import Checkpoint, fingerprint
from selectray.columns import CLUSTER, DISTANCE, ID, POS
from selectray.storage import Location


@dataclass
class Clusters:
    """The k-center stage's result, arrays indexed by pos."""

    centers: np.ndarray  # pos of each center, in the order chosen
    radii: np.ndarray  # coverage radius after each center
    assignment: np.ndarray  # per pos: cluster id (index into centers), -1 if rejected
    distance: np.ndarray  # per pos: distance to its center
    n_seeds: int
    rejected: dict[int, str]  # pos -> reason (rows whose vectors cannot be used)
    reused: bool
    passes: int = 0
    shard_nodes: int = 0  # distinct nodes the shards ran on (0: reused from the checkpoint)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignment[self.assignment >= 0], minlength=len(self.centers))


def kcenter_stage(pool, embeddings, k: int, cfg, out: Location, *, seeds: list[str], progress: bool,
                  gpus: bool) -> Clusters:
    """Run (or reuse) greedy k-center with k centers, seeds first, over the embeddings checkpoint."""
    from selectray.embeddings import seed_positions
    from selectray.kcenter import distributed_k_center

    key = fingerprint("kcenter", embeddings.key, k, seeds, cfg.mode, cfg.num_shards if cfg.mode == "composable" else None)
    ck = Checkpoint(out / "kcenter", key, k=k, mode=cfg.mode, seeds=len(seeds))
    if ck.is_sealed():
        return _load(ck, pool.num_usable, len(seeds))
    ck.reset()
    files = embeddings.files()
    seed_pos = seed_positions(files, seeds) if seeds else ()
    result = distributed_k_center(files, k, num_shards=cfg.num_shards, seeds=seed_pos, mode=cfg.mode,
                                  progress=progress, num_gpus_per_shard=1 if gpus else 0)
    centers = result.centers.astype(np.int64)
    ck.write_part(pa.table({
        "order": np.arange(len(centers), dtype=np.int64), POS: centers, ID: pool.ids.take(pa.array(centers)),
        "radius": result.radii.astype(np.float64), "seed": np.arange(len(centers)) < result.n_seeds,
    }), "centers")
    reasons = np.full(pool.num_usable, None, dtype=object)
    reasons[result.rejected_pos] = result.rejected_reason
    ck.write_part(pa.table({
        ID: pool.ids, POS: np.arange(pool.num_usable, dtype=np.int64),
        CLUSTER: result.assignment.astype(np.int64), DISTANCE: result.distance.astype(np.float32),
        "reject": pa.array(reasons.tolist(), pa.string()),
    }), "assignment")
    ck.seal(passes=int(result.passes), shard_nodes=int(result.stats.get("shard_nodes", 0)))
    return Clusters(centers, result.radii, result.assignment.astype(np.int64), result.distance.astype(np.float64),
                    result.n_seeds, result.rejected, reused=False, passes=int(result.passes),
                    shard_nodes=int(result.stats.get("shard_nodes", 0)))


def _load(ck: Checkpoint, n: int, n_seeds: int) -> Clusters:
    c = (ck.folder / "centers.parquet").read_parquet().sort_by("order")
    a = (ck.folder / "assignment.parquet").read_parquet().sort_by(POS)
    if a.num_rows != n:
        raise ValueError(f"k-center checkpoint {ck.folder} has {a.num_rows} rows, expected {n}")
    reject = a["reject"].to_pylist()
    rejected = {i: r for i, r in enumerate(reject) if r is not None}
    return Clusters(c[POS].to_numpy(), c["radius"].to_numpy(), a[CLUSTER].to_numpy(),
                    a[DISTANCE].to_numpy().astype(np.float64), n_seeds, rejected, reused=True,
                    passes=int(ck.manifest().get("passes", 0)))


def seed_ids(cfg) -> list[str]:
    """Seed ids (`cfg`: the kcenter section) from the list and the seeds file, in order, without repeats."""
    from pathlib import Path

    from selectray.errors import ConfigError

    ids = list(cfg.seeds)
    if cfg.seeds_file:
        try:
            ids += [line.strip() for line in Path(cfg.seeds_file).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise ConfigError(f"kcenter.seeds_file {cfg.seeds_file}: {e.strerror}") from None
    return list(dict.fromkeys(ids))
