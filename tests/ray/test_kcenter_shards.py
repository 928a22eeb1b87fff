"""Sharded k-center on Ray actors: equal to the single-process result, checkpoint input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectray import embeddings
from selectray.kcenter import KCenterError, distributed_k_center, greedy_k_center

SHARD_CPUS = 0.25  # tests share a 2-CPU local Ray: fractional shards always fit


def clustered(n: int, d: int, seed: int, blobs: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((blobs, d)) * 3
    x = means[rng.integers(0, blobs, n)] + rng.standard_normal((n, d)) * 0.4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_checkpoint(folder: Path, x, sizes: list[int], seed: int = 0, fixed: bool = True, dtype=None):
    """Files of the given row counts, rows shuffled across files, file names shuffled.

    x is an (N, d) array or a list of vectors (None / any length allowed with fixed=False).
    """
    folder.mkdir(parents=True, exist_ok=True)
    dtype = dtype or pa.float32()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    names = rng.permutation(len(sizes))
    start = 0
    for name, size in zip(names, sizes, strict=True):
        pos = order[start : start + size]
        start += size
        if fixed:
            flat = pa.array(np.asarray(x)[pos].reshape(-1), type=dtype)
            emb = pa.FixedSizeListArray.from_arrays(flat, np.asarray(x).shape[1])
        else:
            emb = pa.array([None if x[p] is None else list(map(float, x[p])) for p in pos], pa.list_(dtype))
        table = pa.table({"id": [f"id-{p}" for p in pos], "pos": pa.array(pos, pa.int64()), "embedding": emb})
        pq.write_table(table, folder / f"part-{name}.parquet", row_group_size=max(1, size // 2))
    assert start == len(x)
    return folder


def wait_cpus_free(total: float, timeout: float = 20.0) -> bool:
    import ray

    end = time.time() + timeout
    while time.time() < end:
        if ray.available_resources().get("CPU", 0.0) >= total - 1e-9:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    x = clustered(1300, 16, seed=1)
    folder = write_checkpoint(tmp_path_factory.mktemp("emb") / "embeddings", x, [500, 9, 331, 60, 400])
    return x, folder


def test_plan_shards_balances_whole_files():
    files = [("a", 500), ("b", 9), ("c", 331), ("d", 60), ("e", 400)]
    plan = embeddings.plan_shards(files, 3)
    assert sorted(f for p in plan for f in p) == ["a", "b", "c", "d", "e"]
    loads = sorted(sum(dict(files)[f] for f in p) for p in plan)
    assert loads == [400, 400, 500]  # largest first onto the lightest: c+d+b, e, a


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4])
def test_sharded_exact_equals_single_process(ray_local, pool, num_shards):
    x, folder = pool
    single = greedy_k_center(x, 45, lookahead=16)
    sharded = distributed_k_center(folder, 45, num_shards=num_shards, lookahead=16, num_cpus_per_shard=SHARD_CPUS)
    assert sharded.stats["num_shards"] == num_shards
    np.testing.assert_array_equal(sharded.centers, single.centers)
    np.testing.assert_array_equal(sharded.radii, single.radii)
    np.testing.assert_array_equal(sharded.assignment, single.assignment)
    np.testing.assert_allclose(sharded.distance, single.distance, rtol=1e-6)
    assert len(sharded.rejected_pos) == 0


def test_array_input_and_actors_are_released(ray_local, pool):
    import ray

    total = ray.cluster_resources()["CPU"]
    x, _ = pool
    single = greedy_k_center(x, 30, start=77)
    sharded = distributed_k_center(x, 30, num_shards=3, start=77, num_cpus_per_shard=SHARD_CPUS)
    np.testing.assert_array_equal(sharded.centers, single.centers)
    np.testing.assert_array_equal(sharded.assignment, single.assignment)
    assert wait_cpus_free(total)


def test_composable_is_within_4x_and_assigns_to_the_nearest_chosen_center(ray_local, pool):
    x, folder = pool
    exact = greedy_k_center(x, 40)
    comp = distributed_k_center(folder, 40, num_shards=3, mode="composable", num_cpus_per_shard=SHARD_CPUS)
    assert comp.mode == "composable" and comp.centers[0] == 0
    assert len(set(comp.centers.tolist())) == 40
    x64 = x.astype(np.float64)
    d = ((x64[:, None, :] - x64[comp.centers][None]) ** 2).sum(-1)
    true_radius = np.sqrt(d.min(axis=1).max())
    assert comp.radii[-1] == pytest.approx(true_radius, rel=1e-5)
    assert true_radius <= 4 * exact.radii[-1]
    picked = d[np.arange(len(x)), comp.assignment]
    assert np.all(picked <= d.min(axis=1) + 1e-5)
    np.testing.assert_allclose(comp.distance, np.sqrt(picked), rtol=1e-5, atol=1e-6)


def test_seed_ids_and_rejected_rows(ray_local, tmp_path):
    x = clustered(300, 8, seed=4)
    rows: list = list(x)
    rows[10] = None
    rows[20] = np.ones(9, np.float32)
    rows[30] = np.full(8, np.nan, np.float32)
    folder = write_checkpoint(tmp_path / "emb", rows, [120, 180], fixed=False)
    seeds = embeddings.seed_positions(folder, ["id-250", "id-3"])
    assert seeds.tolist() == [250, 3]
    result = distributed_k_center(folder, 12, num_shards=2, seeds=seeds, num_cpus_per_shard=SHARD_CPUS)
    assert result.rejected == {10: "missing_embedding", 20: "bad_dimension", 30: "nonfinite_embedding"}
    assert result.centers[:2].tolist() == [250, 3] and result.n_seeds == 2
    assert np.all(result.assignment[[10, 20, 30]] == -1) and np.isnan(result.distance[[10, 20, 30]]).all()
    keep = np.setdiff1d(np.arange(300), [10, 20, 30])
    alone = greedy_k_center(x[keep], 12, seeds=[int(np.flatnonzero(keep == s)[0]) for s in (250, 3)])
    np.testing.assert_array_equal(keep[alone.centers], result.centers)
    np.testing.assert_array_equal(alone.radii, result.radii)
    with pytest.raises(KCenterError, match="seed ids not in the pool: nope"):
        embeddings.seed_positions(folder, ["id-1", "nope"])


def test_float16_checkpoint(ray_local, tmp_path):
    x = clustered(400, 12, seed=5).astype(np.float16)
    folder = write_checkpoint(tmp_path / "emb", x, [150, 250], dtype=pa.float16())
    result = distributed_k_center(folder, 20, num_shards=2, num_cpus_per_shard=SHARD_CPUS)
    single = greedy_k_center(x, 20)
    np.testing.assert_array_equal(result.centers, single.centers)
    np.testing.assert_array_equal(result.radii, single.radii)


def test_bad_input_errors_and_cleanup(ray_local, pool, tmp_path):
    import ray

    total = ray.cluster_resources()["CPU"]
    x, folder = pool
    with pytest.raises(KCenterError, match="exceeds the 1300 usable rows"):
        distributed_k_center(folder, 1301, num_shards=2, num_cpus_per_shard=SHARD_CPUS)
    with pytest.raises(KCenterError, match="k must be positive"):
        distributed_k_center(x, 0, num_shards=2)
    with pytest.raises(KCenterError, match="mode must be"):
        distributed_k_center(folder, 3, num_shards=2, mode="fast", num_cpus_per_shard=SHARD_CPUS)
    with pytest.raises(KCenterError, match="num_shards"):
        distributed_k_center(folder, 3, num_shards=0)
    with pytest.raises(KCenterError, match="no Parquet files"):
        distributed_k_center(tmp_path, 3, num_shards=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "part-0.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(KCenterError, match="cannot read Parquet file .*part-0.parquet"):
        distributed_k_center(broken, 3, num_shards=1)
    dup = write_checkpoint(tmp_path / "dup", np.concatenate([x[:50], x[:50]]), [100])
    table = pq.read_table(next(dup.glob("*.parquet")))
    pq.write_table(table.set_column(1, "pos", pa.array(np.arange(100) % 60, pa.int64())), dup / "part-0.parquet")
    with pytest.raises(KCenterError, match="not a unique 0..N-1 numbering"):
        distributed_k_center(dup, 3, num_shards=2, num_cpus_per_shard=SHARD_CPUS)
    assert wait_cpus_free(total)
