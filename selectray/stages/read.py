"""Read stage: input files -> validated rows with ids and positions, on Ray Data.

`read_pool` returns the usable rows as Arrow blocks in the object store, in input
order, each with a dense `pos` (0..N-1, the row identity for every later stage) and
`_row` (position among all input rows), plus the rejected rows. Inputs may be local
paths or object-store URIs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data.datasource import FileBasedDatasource

from selectray.columns import HASH, ID, POS, REJECT, ROW
from selectray.errors import InputError
from selectray.settings import ColumnsConfig, ReadConfig
from selectray.stages.validate import TextColumns, parse_jsonl, validate_table

_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Pool:
    """The read stage's result: the usable rows (in the object store) and the rejected ones."""

    blocks: list  # ObjectRefs of pa.Table: usable rows, in input order
    rejected: pa.Table  # original columns + id, _row, _reject
    columns: TextColumns
    # Per usable row, indexed by pos, as Arrow strings: one buffer each, no Python objects
    # (a million rows cost the driver ~80 MB here, not ~300 MB of str objects).
    ids: pa.Array  # the row's id
    hashes: pa.Array  # its content hash (the key of every cache)
    fingerprint: str  # hash of (id, content hash) of every usable row, in order

    @property
    def num_usable(self) -> int:
        return len(self.ids)

    def ids_at(self, positions) -> list[str]:
        """The ids of some rows (by pos), as Python strings."""
        return self.ids.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()

    num_input: int = 0

    def column_names(self) -> list[str]:
        return self.dataset().columns()

    def dataset(self, columns: list[str] | None = None, positions: np.ndarray | None = None) -> ray.data.Dataset:
        """The usable rows as a Ray Dataset: `columns` only, and only the rows at `positions`
        (sorted pos values) when given. Those rows are taken out of the blocks first, so a
        later `map_batches` gets full batches rather than the few survivors of each block."""
        if positions is None:
            ds = ray.data.from_arrow_refs(self.blocks)
            return ds if columns is None else ds.select_columns(columns)
        take, wanted = ray.remote(_rows_at), ray.put(np.asarray(positions, dtype=np.int64))
        return ray.data.from_arrow_refs([take.remote(b, columns, wanted) for b in self.blocks])


def _rows_at(table: pa.Table, columns: list[str] | None, positions: np.ndarray) -> pa.Table:
    hit = np.isin(table[POS].to_numpy(), positions, assume_unique=True)
    return (table if columns is None else table.select(columns)).filter(pa.array(hit))


def resolve_inputs(paths: list[str], fmt: str) -> list[tuple[str, str]]:
    """Expand folders and check every file up front, so a bad path fails before Ray starts work."""
    files: list[tuple[str, str]] = []
    for raw in paths:
        if "://" in raw:  # object storage: let Ray's filesystem layer resolve it
            files.append((raw, fmt if fmt != "auto" else _SUFFIXES.get(Path(raw).suffix, "parquet")))
            continue
        p = Path(raw)
        if not p.exists():
            raise InputError(f"input not found: {p}")
        found = sorted(q for q in p.rglob("*") if q.suffix in _SUFFIXES and q.is_file()) if p.is_dir() else [p]
        if not found:
            raise InputError(f"input folder {p} holds no .parquet or .jsonl files")
        for f in found:
            kind = fmt if fmt != "auto" else _SUFFIXES.get(f.suffix)
            if kind is None:
                raise InputError(f"cannot tell the format of {f}; name it .parquet or .jsonl, or set read.format")
            try:
                if kind == "parquet":
                    pq.read_metadata(f)
                else:
                    with open(f, "rb") as fh:
                        fh.read(1)
            except (OSError, pa.ArrowException) as e:
                raise InputError(f"cannot read {f}: {str(e).splitlines()[0]}") from None
            files.append((str(f), kind))
    return files


def resolve_columns(c: ColumnsConfig, files: list[tuple[str, str]]) -> TextColumns:
    """Decide the id column (`auto`) and check the mapped columns exist in Parquet inputs."""
    names: set[str] | None = None
    for path, kind in files:
        if kind == "parquet" and "://" not in path:
            schema_names = set(pq.read_schema(path).names)
            missing = [x for x in (c.instruction,) if x not in schema_names]
            if missing:
                raise InputError(
                    f"{path} has no column '{missing[0]}' (columns: {', '.join(sorted(schema_names))}); set columns.instruction"
                )
            if c.id not in (None, "auto") and c.id not in schema_names:
                raise InputError(f"{path} has no id column '{c.id}'; set columns.id to one of: {', '.join(sorted(schema_names))}")
            names = schema_names if names is None else names | schema_names
    id_col = c.id
    if id_col == "auto":
        id_col = ID if (names is None or ID in names) else None
    return TextColumns(c.instruction, c.input, c.output, id_col)


class JsonlDatasource(FileBasedDatasource):
    """JSON Lines reader that turns bad lines into rejected rows instead of failing the file."""

    def __init__(self, paths: list[str], text_columns: list[str], **kwargs):
        super().__init__(paths, **kwargs)
        self._text_columns = text_columns

    def _read_stream(self, f, path: str):
        yield parse_jsonl(f.readall(), self._text_columns)


def read_dataset(files: list[tuple[str, str]], cols: TextColumns) -> ray.data.Dataset:
    """Lazily read every input file (Parquet and JSONL may be mixed) into one dataset."""
    parquet = [p for p, k in files if k == "parquet"]
    jsonl = [p for p, k in files if k == "jsonl"]
    parts = []
    if parquet:
        parts.append(ray.data.read_parquet(parquet))
    if jsonl:
        parts.append(ray.data.read_datasource(JsonlDatasource(jsonl, cols.text)))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


@ray.remote
def _keys(table: pa.Table) -> pa.Table:
    return table.select([ID, HASH, REJECT])


@ray.remote(num_returns=2)
def _split(table: pa.Table, row_start: int, pos_start: int, dups: np.ndarray):
    """Number the rows of one block, mark duplicates, split usable from rejected."""
    n = table.num_rows
    reject = table[REJECT].combine_chunks()
    if len(dups):
        dup = np.zeros(n, dtype=bool)
        dup[dups] = True
        reject = pc.if_else(pa.array(dup), pa.scalar("duplicate_id"), reject)
    table = table.set_column(table.column_names.index(REJECT), REJECT, reject)
    table = table.append_column(ROW, pa.array(np.arange(row_start, row_start + n, dtype=np.int64)))
    ok = pc.is_null(reject)
    usable = table.filter(ok)
    usable = usable.append_column(POS, pa.array(np.arange(pos_start, pos_start + usable.num_rows, dtype=np.int64)))
    return usable.drop_columns([REJECT]), table.filter(pc.invert(ok))


def read_pool(files: list[tuple[str, str]], columns: ColumnsConfig, read: ReadConfig, *, need_output: bool) -> Pool:
    """Read, validate, number and de-duplicate the input files (from `resolve_inputs`)."""
    cols = resolve_columns(columns, files)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # positions follow input order
    ds = read_dataset(files, cols).map_batches(
        _validate_batch,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"cols": cols, "max_chars": read.max_chars, "need_output": need_output},
    )
    try:
        blocks = ds.to_arrow_refs()
        keys = ray.get([_keys.remote(b) for b in blocks])
    except Exception as e:  # noqa: BLE001 - surface the user-facing cause of a Ray task failure
        raise _input_error(e) from None
    sizes = [k.num_rows for k in keys]
    all_keys = pa.concat_tables(keys) if keys else pa.table({ID: [], HASH: [], REJECT: []})
    ok = pc.is_null(all_keys[REJECT]).to_numpy(zero_copy_only=False)
    ids = all_keys[ID].combine_chunks().cast(pa.large_string())
    dup_rows = duplicate_rows(ids, ok)
    ok[dup_rows] = False

    row_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    pos_starts = np.concatenate([[0], np.cumsum([ok[s:s + n].sum() for s, n in zip(row_starts, sizes)])[:-1]]).astype(np.int64)
    usable, rejected = [], []
    for b, start, pstart, n in zip(blocks, row_starts, pos_starts, sizes):
        local_dups = dup_rows[(dup_rows >= start) & (dup_rows < start + n)] - start
        u, r = _split.remote(b, int(start), int(pstart), local_dups)
        usable.append(u)
        rejected.append(r)
    rejected_tables = [t for t in ray.get(rejected) if t.num_rows]
    rejected_table = pa.concat_tables(rejected_tables, promote_options="permissive") if rejected_tables else pa.table({})
    keep = pa.array(ok)
    usable_ids = ids.filter(keep)
    usable_hashes = all_keys[HASH].combine_chunks().cast(pa.large_string()).filter(keep)
    fingerprint = pool_fingerprint(usable_ids, usable_hashes)
    return Pool(usable, rejected_table, cols, usable_ids, usable_hashes, fingerprint, num_input=len(ids))


def pool_fingerprint(*columns: pa.Array) -> str:
    """Fingerprint of string columns (row order and values), from their buffers: no Python strings."""
    digest = hashlib.sha256()
    for col in columns:
        col = pa.concat_arrays([col]) if col.offset else col  # a copy that starts at its buffers' start
        offsets = np.frombuffer(col.buffers()[1], dtype=np.int64)[: len(col) + 1]
        digest.update(len(col).to_bytes(8, "little"))
        digest.update((offsets - offsets[0]).tobytes())
        if len(col):
            digest.update(memoryview(col.buffers()[2])[offsets[0]:offsets[-1]])
    return digest.hexdigest()[:32]


def _validate_batch(table: pa.Table, cols: TextColumns, max_chars: int, need_output: bool) -> pa.Table:
    try:
        return validate_table(table, cols, max_chars=max_chars, need_output=need_output)
    except TypeError as e:
        raise InputError(str(e)) from None


def duplicate_rows(ids: pa.Array, ok: np.ndarray) -> np.ndarray:
    """Row numbers of usable rows whose id was already seen earlier (the first occurrence is kept)."""
    idx = np.flatnonzero(ok)
    if not len(idx):
        return idx
    rows = pa.table({"id": ids.take(pa.array(idx)), "row": pa.array(idx)})
    first = rows.group_by("id", use_threads=False).aggregate([("row", "min")])["row_min"].to_numpy()
    keep = np.zeros(len(ids), dtype=bool)
    keep[first] = True
    return idx[~keep[idx]]


def _input_error(e: Exception) -> Exception:
    """Reduce a Ray task failure to the user-facing error that caused it, when there is one."""
    cause = getattr(e, "cause", None) or e.__cause__
    if isinstance(cause, InputError):
        return cause
    if isinstance(e, InputError):
        return e
    first = str(cause or e).strip().splitlines()
    return InputError(f"reading the input failed: {first[-1] if first else type(e).__name__}")
