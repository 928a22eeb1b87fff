"""The embeddings checkpoint format, defined once: how vectors are stored and read back.

A checkpoint (`OUT/embeddings/`, see `selectray.checkpoint`) holds Parquet parts with
`id`, `pos` (the row's position 0..N-1) and `embedding` (a fixed-size list of float32
or float16). The embed stage writes it; the k-center shards, the SelectLLM k-means
groups and the report's coverage read it through the functions here. A folder of
Parquet files without a manifest (an embedding set made elsewhere) reads the same way.
Files may be local or on object storage (`selectray.storage.Location`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectray.checkpoint import MANIFEST
from selectray.columns import EMBEDDING, ID, POS
from selectray.kcenter.distances import sq_norms
from selectray.kcenter.vectors import (
    REASON_DIMENSION,
    REASON_MISSING,
    REASON_NONFINITE,
    KCenterError,
    VectorRows,
)
from selectray.storage import Location

# Rows per decoded batch: 2048 x 384 float32 (3 MB) stays in cache; at 8192 a shard's read
# took ~40 MB more memory and ~1.5x the time (1M rows, 2 shards, this project's benchmark).
READ_BATCH_ROWS = 2048


def to_fixed_size_list(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """(N, d) array -> the Arrow column the checkpoint stores."""
    flat = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), vectors.shape[1])


def _loc(source: Any) -> Location:
    return source if isinstance(source, Location) else Location(str(source))


def embedding_files(source: Any) -> list[tuple[Location, int]]:
    """(file, row count) of each part of a checkpoint folder (its manifest's parts, else every
    .parquet file, counted from the footers), or of a list of files."""
    if isinstance(source, list | tuple):
        files = [_loc(f) for f in source]
    else:
        folder = _loc(source)
        if not folder.is_dir():
            raise KCenterError(f"embeddings checkpoint '{folder}' is not a folder")
        try:
            m = (folder / MANIFEST).read_json()
            return [(folder / p["file"], int(p["rows"])) for p in m["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            files = folder.list(".parquet")
        if not files:
            raise KCenterError(f"embeddings checkpoint '{folder}' has no Parquet files")
    out = []
    for f in files:
        try:
            out.append((f, f.parquet_rows()))
        except Exception as e:  # noqa: BLE001 - any unreadable footer is the same user error
            raise KCenterError(f"cannot read Parquet file '{f}': {str(e).splitlines()[0]}") from None
    return out


def plan_shards(files: Sequence[tuple[Any, int]], num_shards: int) -> list[list[Any]]:
    """Assign whole files to shards, balanced by row count (largest file to the lightest shard)."""
    if num_shards < 1:
        raise KCenterError(f"num_shards must be at least 1, got {num_shards}")
    loads = [0] * num_shards
    plan: list[list[Any]] = [[] for _ in range(num_shards)]
    for path, rows in sorted(files, key=lambda fr: (-fr[1], str(fr[0]))):
        i = loads.index(min(loads))
        plan[i].append(path)
        loads[i] += rows
    return plan


def _open(f: Location, **kwargs: Any) -> pq.ParquetFile:
    return pq.ParquetFile(f.path, filesystem=f.fs, **kwargs)


def embedding_layout(files: Sequence[tuple[Location, int]]) -> tuple[int, np.dtype]:
    """(dimension, storage dtype) of the embedding column, from the schemas.

    The dimension is the list size most rows have (rows of other sizes are rejected
    later as `bad_dimension`); for variable-size lists it is sampled from the data.
    Storage is float16 only if every file stores float16.
    """
    sizes: dict[int, int] = {}
    half = True
    for f, rows in files:
        pf = _open(f)
        schema = pf.schema_arrow
        if EMBEDDING not in schema.names or POS not in schema.names:
            raise KCenterError(f"'{f}' lacks the '{POS}' and '{EMBEDDING}' columns of an embeddings checkpoint")
        t = schema.field(EMBEDDING).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
            raise KCenterError(f"'{f}': column '{EMBEDDING}' is {t}, not a list of floats")
        half = half and pa.types.is_float16(t.value_type)
        if pa.types.is_fixed_size_list(t):
            sizes[t.list_size] = sizes.get(t.list_size, 0) + rows
        else:
            # Variable-size lists: sample the first rows' lengths (a small batch, not the file).
            batch = next(pf.iter_batches(batch_size=1024, columns=[EMBEDDING]), None)
            if batch is not None:
                lengths = batch.column(EMBEDDING).value_lengths().drop_null().to_numpy()
                values, counts = np.unique(lengths, return_counts=True)
                for v, c in zip(values, counts, strict=True):
                    sizes[int(v)] = sizes.get(int(v), 0) + int(c)
    if not sizes:
        raise KCenterError("the embeddings checkpoint has no vectors")
    dim = max(sizes, key=lambda s: (sizes[s], -s))
    return dim, np.dtype(np.float16 if half else np.float32)


# Per-row status while reading; REASONS[code] is the rejection reason.
OK, MISSING, DIMENSION, NONFINITE = 0, 1, 2, 3
REASONS = np.array(["", REASON_MISSING, REASON_DIMENSION, REASON_NONFINITE], dtype=object)


def read_vectors(files: Sequence[Any], dim: int, dtype: Any = np.float32) -> VectorRows:
    """The usable rows of some checkpoint files as one (n, dim) array (a k-center shard's rows).

    Streams small record batches into a preallocated array: decoding a whole Parquet
    row group of list<float> at once takes ~5x its size in buffers, so batches keep
    the peak near the shard's own size. Rows with a null, wrong-length or non-finite
    vector are rejected.
    """
    locs = [_loc(f) for f in files]
    total = sum(f.parquet_rows() for f in locs)
    x = np.empty((total, dim), np.dtype(dtype))
    pos = np.empty(total, np.int64)
    norms = np.empty(total, np.float32)
    bad_pos, bad_code = [], []
    w = 0
    for f in locs:
        try:
            # Stream pages (1 MiB buffer) rather than whole column chunks: lower peak memory.
            pf = _open(f, pre_buffer=False, buffer_size=1 << 20)
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=[POS, EMBEDDING], use_threads=False):
                w = _append(batch, dim, f, x, pos, norms, w, bad_pos, bad_code)
            # Arrow's allocator keeps freed pages; over a shard's files they added ~80 MB to
            # the peak of every shard, beside the vectors it holds for the whole run.
            pa.default_memory_pool().release_unused()
        except (OSError, pa.ArrowException) as e:
            raise KCenterError(f"cannot read embeddings file '{f}': {str(e).splitlines()[0]}") from None
    rej_pos = np.concatenate(bad_pos) if bad_pos else np.empty(0, np.int64)
    codes = np.concatenate(bad_code) if bad_code else np.empty(0, np.uint8)
    return VectorRows(x[:w], pos[:w], norms[:w], rej_pos, REASONS[codes])


def _append(batch: pa.RecordBatch, dim: int, f: Location, x, pos, norms, w: int, bad_pos: list, bad_code: list) -> int:
    """Append one batch's usable rows to x/pos/norms from row w on; returns the new w."""
    if batch.column(POS).null_count:
        raise KCenterError(f"'{f}': column '{POS}' has nulls")
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
    return w + n


def _embedding_matrix(col, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float matrix of a list column (zeros where unusable) and per-row status codes."""
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


def iter_batches(source: Any, batch_rows: int = READ_BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pos, float32 vectors) of every row, batch by batch, in file order (unusable vectors as zeros)."""
    files = embedding_files(source)
    dim, _ = embedding_layout(files)
    for f, _ in files:
        for batch in _open(f, pre_buffer=False, buffer_size=1 << 20).iter_batches(batch_size=batch_rows, columns=[POS, EMBEDDING]):
            vec, _ = _embedding_matrix(batch.column(EMBEDDING), dim)
            yield batch.column(POS).to_numpy().astype(np.int64), vec.astype(np.float32, copy=False)


def read_embeddings(source: Any, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pos, float32 vectors) of the rows at `positions` (all rows when None), sorted by pos."""
    wanted = None if positions is None else np.unique(np.asarray(positions, np.int64))
    got_pos, got_vec = [], []
    for p, v in iter_batches(source):
        if wanted is not None:
            keep = np.isin(p, wanted)
            p, v = p[keep], v[keep]
        got_pos.append(p)
        got_vec.append(v)
    pos = np.concatenate(got_pos) if got_pos else np.empty(0, np.int64)
    vec = np.concatenate(got_vec) if got_vec else np.empty((0, 0), np.float32)
    order = np.argsort(pos, kind="stable")
    return pos[order], vec[order]


def seed_positions(source: Any, ids: Sequence[str]) -> np.ndarray:
    """Positions (`pos`) of rows given by `id`, in the given order.

    Raises KCenterError (a ValueError) naming ids that are not in the pool.
    """
    ids = [str(i) for i in ids]
    if not ids:
        return np.empty(0, np.int64)
    wanted = pa.array(ids, pa.string())
    found: dict[str, int] = {}
    for f, _ in embedding_files(source):
        t = _open(f).read(columns=[ID, POS])
        t = t.filter(pc.is_in(t[ID].cast(pa.string()), value_set=wanted))
        for i, p in zip(t[ID].to_pylist(), t[POS].to_pylist(), strict=True):
            found[i] = min(p, found.get(i, p))
    missing = [i for i in ids if i not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise KCenterError(f"seed ids not in the pool: {', '.join(missing[:5])}{more}")
    return np.asarray([found[i] for i in ids], np.int64)
