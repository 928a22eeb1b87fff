"""Sharded greedy k-center on Ray actors, exact or composable; assignment of every row.

Each shard is a Ray actor that owns its rows: vectors, squared norms, min-distances
and nearest-center indices (a `selectray.kcenter.ShardState`). The driver never holds
all vectors: per pass it receives every shard's top m+1 rows, certifies centers
(`selectray.kcenter.certified_greedy`) and sends them back to be applied, one call
per shard per pass.

Input is an in-memory (N, d) array (pos = row index; each shard gets a contiguous
slice through the object store) or an embeddings checkpoint: a folder of Parquet
files with `id`, `pos` (the global row position 0..N-1) and `embedding` (a list of
float32/float16). Whole files are assigned to shards, balanced by the row counts in
their footers; each actor reads its own files.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from selectray.kcenter import (
    DEFAULT_BLOCK_ROWS,
    REASON_DIMENSION,
    REASON_MISSING,
    REASON_NONFINITE,
    KCenterError,
    KCenterResult,
    Rows,
    check_k,
    concat_top,
    make_shard,
    merge_vectors,
    run_k_center,
    sq_norms,
    validate_rows,
)

POS = "pos"
ID = "id"
EMBEDDING = "embedding"
READ_BATCH_ROWS = 8192


# --------------------------------------------------------------------------- checkpoint files


def checkpoint_files(folder: str | Path) -> list[tuple[str, int]]:
    """(path, row count) of each Parquet file of a checkpoint, from the footers only."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not folder.is_dir():
        raise KCenterError(f"embeddings checkpoint '{folder}' is not a folder")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise KCenterError(f"embeddings checkpoint '{folder}' has no Parquet files")
    out = []
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except Exception as e:  # noqa: BLE001 - any unreadable footer is the same user error
            raise KCenterError(f"cannot read Parquet file '{f}': {e}") from None
        out.append((str(f), meta.num_rows))
    return out


def plan_shards(files: list[tuple[str, int]], num_shards: int) -> list[list[str]]:
    """Assign whole files to shards, balanced by row count (largest file to the lightest shard)."""
    if num_shards < 1:
        raise KCenterError(f"num_shards must be at least 1, got {num_shards}")
    loads = [0] * num_shards
    plan: list[list[str]] = [[] for _ in range(num_shards)]
    for path, rows in sorted(files, key=lambda fr: (-fr[1], fr[0])):
        i = loads.index(min(loads))
        plan[i].append(path)
        loads[i] += rows
    return plan


def embedding_layout(files: list[tuple[str, int]]) -> tuple[int, np.dtype]:
    """(dimension, storage dtype) of a checkpoint's embedding column, from the schemas.

    The dimension is the list size most rows have (rows of other sizes are rejected
    later as `bad_dimension`); for variable-size lists it is sampled from the data.
    Storage is float16 only if every file stores float16.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes: dict[int, int] = {}
    half = True
    for path, rows in files:
        schema = pq.read_schema(path)
        if EMBEDDING not in schema.names or POS not in schema.names:
            raise KCenterError(f"'{path}' lacks the '{POS}' and '{EMBEDDING}' columns of an embeddings checkpoint")
        t = schema.field(EMBEDDING).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
            raise KCenterError(f"'{path}': column '{EMBEDDING}' is {t}, not a list of floats")
        half = half and pa.types.is_float16(t.value_type)
        if pa.types.is_fixed_size_list(t):
            sizes[t.list_size] = sizes.get(t.list_size, 0) + rows
        else:
            # Variable-size lists: sample the first rows' lengths (a small batch, not the file).
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=1024, columns=[EMBEDDING]), None)
            if batch is not None:
                lengths = batch.column(EMBEDDING).value_lengths().drop_null().to_numpy()
                values, counts = np.unique(lengths, return_counts=True)
                for v, c in zip(values, counts, strict=True):
                    sizes[int(v)] = sizes.get(int(v), 0) + int(c)
    if not sizes:
        raise KCenterError("the embeddings checkpoint has no vectors")
    dim = max(sizes, key=lambda s: (sizes[s], -s))
    return dim, np.dtype(np.float16 if half else np.float32)


def read_embedding_files(files: list[str], dim: int, dtype: Any = np.float32) -> Rows:
    """Read the usable rows of some checkpoint files into one (n, dim) array.

    Streams small record batches into a preallocated array: decoding a whole Parquet
    row group of list<float> at once takes ~5x its size in buffers, so batches keep
    the peak near the shard's own size. Rows with a null, wrong-length or non-finite
    vector are rejected.
    """
    import pyarrow.parquet as pq

    total = sum(pq.read_metadata(f).num_rows for f in files)
    x = np.empty((total, dim), np.dtype(dtype))
    pos = np.empty(total, np.int64)
    norms = np.empty(total, np.float32)
    bad_pos, bad_code = [], []
    w = 0
    for path in files:
        try:
            w = _read_file(path, dim, x, pos, norms, w, bad_pos, bad_code)
        except (OSError, pa.ArrowException) as e:
            raise KCenterError(f"cannot read embeddings file '{path}': {e}") from None
    rej_pos = np.concatenate(bad_pos) if bad_pos else np.empty(0, np.int64)
    codes = np.concatenate(bad_code) if bad_code else np.empty(0, np.uint8)
    return Rows(x[:w], pos[:w], norms[:w], rej_pos, REASONS[codes])


def _read_file(path: str, dim: int, x, pos, norms, w: int, bad_pos: list, bad_code: list) -> int:
    """Append one file's usable rows to x/pos/norms from row w on; returns the new w."""
    import pyarrow.parquet as pq

    # Stream pages (1 MiB buffer) rather than whole column chunks: lower peak memory.
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=[POS, EMBEDDING], use_threads=False):
        if batch.column(POS).null_count:
            raise KCenterError(f"'{path}': column '{POS}' has nulls")
        p = batch.column(POS).to_numpy().astype(np.int64, copy=False)
        vec, code = _embedding_matrix(batch.column(EMBEDDING), dim)
        with np.errstate(over="ignore", invalid="ignore"):
            nrm = sq_norms(vec)
        code[(code == OK) & ~np.isfinite(nrm)] = NONFINITE
        ok = code == OK
        n = int(ok.sum())
        if n == len(p):
            x[w : w + n], pos[w : w + n], norms[w : w + n] = vec, p, nrm
        else:
            x[w : w + n], pos[w : w + n], norms[w : w + n] = vec[ok], p[ok], nrm[ok]
            bad_pos.append(p[~ok])
            bad_code.append(code[~ok])
        w += n
    return w


# Per-row status while reading; REASONS[code] is the rejection reason.
OK, MISSING, DIMENSION, NONFINITE = 0, 1, 2, 3
REASONS = np.array(["", REASON_MISSING, REASON_DIMENSION, REASON_NONFINITE], dtype=object)


def _embedding_matrix(col, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float matrix of a list column (zeros where unusable) and per-row status codes."""
    import pyarrow as pa

    n = len(col)
    code = np.zeros(n, np.uint8)
    if col.null_count:
        code[~col.is_valid().to_numpy(zero_copy_only=False)] = MISSING
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        if size != dim:
            code[code == OK] = DIMENSION
            return np.zeros((n, dim), np.float32), code
        values = col.values.slice(col.offset * size, n * size)
        return _float_values(values).reshape(n, dim), code
    lengths = col.value_lengths().fill_null(0).to_numpy()
    code[(code == OK) & (lengths != dim)] = DIMENSION
    good = np.flatnonzero(code == OK)
    offsets = col.offsets.to_numpy()[:-1]
    flat = _float_values(col.values)
    out = np.zeros((n, dim), flat.dtype)
    out[good] = flat[offsets[good, None] + np.arange(dim)[None, :]]
    return out, code


def _float_values(values) -> np.ndarray:
    arr = values.to_numpy(zero_copy_only=False)
    return arr if arr.dtype in (np.float16, np.float32) else arr.astype(np.float32)


def seed_positions(checkpoint_dir: str | Path, ids: Sequence[str]) -> np.ndarray:
    """Positions (`pos`) of rows given by `id` in an embeddings checkpoint, in the given order.

    Raises KCenterError (a ValueError) naming ids that are not in the pool.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = [str(i) for i in ids]
    if not ids:
        return np.empty(0, np.int64)
    wanted = pa.array(ids, pa.string())
    found: dict[str, int] = {}
    for path, _ in checkpoint_files(checkpoint_dir):
        t = pq.read_table(path, columns=[ID, POS])
        t = t.filter(pc.is_in(t[ID].cast(pa.string()), value_set=wanted))
        for i, p in zip(t[ID].to_pylist(), t[POS].to_pylist(), strict=True):
            found[i] = min(p, found.get(i, p))
    missing = [i for i in ids if i not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise KCenterError(f"seed ids not in the pool: {', '.join(missing[:5])}{more}")
    return np.asarray([found[i] for i in ids], np.int64)


# --------------------------------------------------------------------------- actors


@ray.remote
class ShardActor:
    """One shard: reads or receives its rows and keeps their greedy state."""

    def __init__(self, source: dict, *, block_rows: int, device: str | None, threads: int):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(1, threads))  # BLAS threads = the CPUs this actor holds
        # A user error here is kept and raised by info(): an error in __init__ reaches the
        # driver only as text, one in a method as the exception itself.
        self.error: KCenterError | None = None
        try:
            if source["kind"] == "files":
                rows = read_embedding_files(source["files"], source["dim"], np.dtype(source["dtype"]))
            else:
                x = ray.get(source["array"])  # refs nested in a dict are not resolved for us
                rows = validate_rows(x, pos=np.arange(source["offset"], source["offset"] + len(x), dtype=np.int64))
            self.state = make_shard(rows, block_rows=block_rows, device=device)
        except KCenterError as e:
            self.error = e

    def info(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return self.state.info()

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(usable positions, rejected positions, rejection reasons)."""
        return self.state.pos, self.state.rejected_pos, self.state.rejected_reason

    def vectors(self, positions):
        return self.state.vectors(positions)

    def step(self, vecs, positions, m):
        return self.state.step(vecs, positions, m)

    def finalize(self, vecs, positions):
        return self.state.finalize(vecs, positions)

    def local_greedy(self, k, forced_vecs, forced_pos, lookahead):
        return self.state.local_greedy(k, forced_vecs, forced_pos, lookahead)

    def assign_all(self, vecs, positions):
        self.state.reset()
        return self.state.apply(vecs, positions, track_radii=True)

    def peak_rss_bytes(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def cpu_seconds(self) -> float:
        """CPU time this actor's process has used (user + system)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


class RayGroup:
    """The shard actors, called in parallel; same interface as kcenter.LocalGroup."""

    def __init__(self, actors: list):
        self.actors = actors
        infos = ray.get([a.info.remote() for a in actors])
        self.rows = sum(i["rows"] for i in infos)
        self.dim = max(i["dim"] for i in infos)
        self.max_sq_norm = max(i["max_sq_norm"] for i in infos)

    def _all(self, method: str, *args) -> list:
        refs = [ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 100_000 else a for a in args]
        return ray.get([getattr(actor, method).remote(*refs) for actor in self.actors])

    def vectors(self, positions):
        return merge_vectors(self._all("vectors", positions), self.dim)

    def step(self, vecs, positions, m):
        return concat_top(self._all("step", vecs, positions, m), self.dim)

    def finalize(self, vecs, positions):
        return self._all("finalize", vecs, positions)

    def local_greedy(self, k, forced_vecs, forced_pos, lookahead):
        return self._all("local_greedy", k, forced_vecs, forced_pos, lookahead)

    def assign_all(self, vecs, positions):
        return self._all("assign_all", vecs, positions)

    def peak_rss_bytes(self) -> list[int]:
        return ray.get([a.peak_rss_bytes.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def start_shards(
    data: Any,
    num_shards: int,
    *,
    num_cpus_per_shard: float | None = None,
    num_gpus_per_shard: float = 0,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    device: str | None = None,
    dim: int | None = None,
    startup_timeout_s: float = 600.0,
) -> tuple[RayGroup, Rows]:
    """Start one actor per shard on `data` (array or checkpoint folder).

    Returns the group and a vector-less Rows with every usable and rejected position
    (checked to be a dense, unique 0..N-1 numbering).
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int | np.integer) or num_shards < 1:
        raise KCenterError(f"num_shards must be a positive integer, got {num_shards!r}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    if num_cpus_per_shard is None:
        # One free core per shard where there are enough, else a fair share of what is
        # free (other work, e.g. a Serve app, may hold CPUs), so all shards start at once.
        share = ray.available_resources().get("CPU", 0.0) / num_shards
        num_cpus_per_shard = min(1.0, share) if share >= 0.05 else 0
    sources = _sources(data, num_shards, dim)
    options = {"num_cpus": num_cpus_per_shard, "num_gpus": num_gpus_per_shard}
    actors = [
        ShardActor.options(**options).remote(
            s, block_rows=block_rows, device=device, threads=max(1, int(num_cpus_per_shard))
        )
        for s in sources
    ]
    try:
        try:
            ray.get([a.info.remote() for a in actors], timeout=startup_timeout_s)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, KCenterError):
                raise e.cause from None
            raise
        except ray.exceptions.GetTimeoutError:
            raise KCenterError(
                f"the {len(actors)} k-center shard actors did not start within {startup_timeout_s:.0f} s"
                f" ({num_cpus_per_shard} CPUs and {num_gpus_per_shard} GPUs each): is the cluster big enough?"
            ) from None
        group = RayGroup(actors)
        rows = _gather_positions(actors, group.dim)
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    return group, rows


def _sources(data: Any, num_shards: int, dim: int | None) -> list[dict]:
    if isinstance(data, str | Path):
        files = checkpoint_files(data)
        layout_dim, dtype = embedding_layout(files)
        plan = [p for p in plan_shards(files, num_shards) if p]
        return [{"kind": "files", "files": p, "dim": dim or layout_dim, "dtype": dtype.str} for p in plan]
    if isinstance(data, np.ndarray) and data.dtype != object:
        if data.ndim != 2:
            raise KCenterError(f"vectors must be a 2-D array (rows x dimensions), got shape {data.shape}")
        bounds = np.linspace(0, len(data), min(num_shards, max(1, len(data))) + 1).astype(np.int64)
        out = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            part = data[a:b]
            if part.dtype not in (np.float16, np.float32):
                part = part.astype(np.float32)
            out.append({"kind": "array", "array": ray.put(np.ascontiguousarray(part)), "offset": int(a)})
        return out
    raise KCenterError(
        f"data must be an (N, d) array or an embeddings checkpoint folder, got {type(data).__name__}"
    )


def _gather_positions(actors: list, dim: int) -> Rows:
    parts = ray.get([a.positions.remote() for a in actors])
    usable = np.concatenate([p for p, _, _ in parts])
    rej_pos = np.concatenate([r for _, r, _ in parts]).astype(np.int64)
    rej_why = np.concatenate([w for _, _, w in parts]).astype(object)
    every = np.concatenate([usable, rej_pos])
    n = len(every)
    if n and (every.min() < 0 or every.max() >= n or np.bincount(every, minlength=n).max() > 1):
        raise KCenterError(f"column '{POS}' is not a unique 0..N-1 numbering of the {n} rows")
    order = np.argsort(rej_pos, kind="stable")
    return Rows(
        np.empty((0, dim), np.float32),
        np.sort(usable),
        np.empty(0, np.float32),
        rej_pos[order],
        rej_why[order],
    )


def distributed_k_center(
    data: Any,
    k: int,
    *,
    num_shards: int,
    seeds: Sequence[int] = (),
    start: int | None = None,
    mode: str = "exact",
    lookahead: int | None = None,
    progress: bool = False,
    device: str | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_cpus_per_shard: float | None = None,
    num_gpus_per_shard: float = 0,
    dim: int | None = None,
    stats_memory: bool = False,
) -> KCenterResult:
    """Greedy k-center with rows sharded over `num_shards` Ray actors.

    data: (N, d) array (pos = row index) or an embeddings checkpoint folder.
    mode="exact": the same result as `kcenter.greedy_k_center` on the same data.
    mode="composable": greedy per shard, then greedy on the union (4-approximation).
    seeds/start: positions of the first centers (see `seed_positions` for ids).
    num_cpus_per_shard: CPUs each actor reserves (default: 1, or a fair share of a
    smaller cluster); it also sets the actor's BLAS threads. num_gpus_per_shard: GPUs
    per actor; with one, the actor computes with torch on CUDA (device=None).
    With stats_memory, result.stats["peak_rss_bytes_shards"] lists each actor's peak RSS.
    The actors are killed before returning.
    """
    # Cheap checks before any actor starts: k against all rows (footers / array
    # length); against the usable rows once the shards have read them.
    if mode not in ("exact", "composable"):
        raise KCenterError(f"mode must be 'exact' or 'composable', got {mode!r}")
    n_seeds = 0 if seeds is None else len(seeds)
    if isinstance(data, str | Path):
        check_k(k, sum(n for _, n in checkpoint_files(data)), n_seeds)
    elif isinstance(data, np.ndarray):
        check_k(k, len(data), n_seeds)
    t_start = time.perf_counter()
    group, rows = start_shards(
        data,
        num_shards,
        num_cpus_per_shard=num_cpus_per_shard,
        num_gpus_per_shard=num_gpus_per_shard,
        block_rows=block_rows,
        device=device,
        dim=dim,
    )
    t_ready = time.perf_counter()
    try:
        result = run_k_center(
            lambda _: group,
            rows,
            k,
            seeds=seeds,
            start=start,
            mode=mode,
            lookahead=lookahead,
            progress=progress,
        )
        result.stats["num_shards"] = len(group.actors)
        result.stats["seconds_startup"] = t_ready - t_start
        result.stats["shard_seconds"] = [i["seconds"] for i in ray.get([a.info.remote() for a in group.actors])]
        result.stats["shard_cpu_seconds"] = ray.get([a.cpu_seconds.remote() for a in group.actors])
        if stats_memory:
            result.stats["peak_rss_bytes_shards"] = group.peak_rss_bytes()
    finally:
        group.close()
    return result
