"""Read stage: input files -> validated rows with ids and positions, one Ray task per part.

`read_pool` returns the usable rows as blocks, in input order, each row with a dense
`pos` (0..N-1, the row identity for every later stage) and `_row` (position among all
input rows), plus the rejected rows. A block of a local Parquet file stays in the file
(selectray.stages.read_files.DiskBlock); others are Arrow tables in the object store.
Inputs may be local paths or object-store URIs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from selectray.columns import HASH, ID, POS, REJECT, ROW
from selectray.errors import InputError
from selectray.settings import ColumnsConfig, ReadConfig
from selectray.stages.read_files import (
    DiskBlock,
    Part,
    block_columns,
    open_block,
    plan_parts,
    read_part,
    resolve_columns,
    resolve_inputs,
)
from selectray.stages.validate import TextColumns, validate_table

__all__ = ["Pool", "duplicate_rows", "open_block", "pool_fingerprint", "read_pool", "resolve_columns", "resolve_inputs"]


@dataclass
class Pool:
    """The read stage's result: the usable rows (blocks a stage opens) and the rejected ones."""

    # Per block, in input order, an ObjectRef of a pa.Table held in the object store or of a
    # DiskBlock that stays in its Parquet file; a task that takes one calls `open_block` on it.
    blocks: list
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
        """Every column a block holds (no rows are read)."""
        names = ray.get([ray.remote(block_columns).remote(b) for b in self.blocks])
        return list(dict.fromkeys(c for n in names for c in n))

    def dataset(self, columns: list[str] | None = None, positions: np.ndarray | None = None) -> ray.data.Dataset:
        """The usable rows as a Ray Dataset: `columns` only, and only the rows at `positions`
        (sorted pos values) when given. Those rows are taken out of the blocks first, so a
        later `map_batches` gets full batches rather than the few survivors of each block."""
        take = ray.remote(rows_at)
        wanted = None if positions is None else ray.put(np.asarray(positions, dtype=np.int64))
        return ray.data.from_arrow_refs([take.remote(b, columns, wanted) for b in self.blocks])


def rows_at(block, columns: list[str] | None, positions: np.ndarray | None) -> pa.Table:
    """The rows of a pool block whose `pos` is in `positions` (sorted; None: all), only `columns`
    (those the block has) when given."""
    table = open_block(block, None if columns is None else [*columns, POS])
    if positions is not None:
        table = table.filter(pa.array(np.isin(table[POS].to_numpy(), positions, assume_unique=True)))
    return table if columns is None else table.select([c for c in columns if c in table.column_names])


@ray.remote(num_returns=2)
def _read(part: Part, cols: TextColumns, max_chars: int, need_output: bool):
    """One part of the input, validated, and its keys (id, content hash, reject reason) for the
    driver. A rereadable part's text stays in its file: only its rejected rows leave the task."""
    try:
        table = validate_table(read_part(part, cols), cols, max_chars=max_chars, need_output=need_output)
    except TypeError as e:
        raise InputError(f"{part.path}: {e}") from None
    keys = table.select([ID, HASH, REJECT])
    if part.rereadable:
        local = pa.array(np.arange(table.num_rows, dtype=np.int64))
        table = table.append_column(ROW, local).filter(pc.is_valid(table[REJECT]))  # _row: within the part, for now
    return table, keys


@ray.remote
def _rejected_on_disk(rejected: pa.Table, part: Part, cols: TextColumns, row_start: int, dups: np.ndarray,
                      max_chars: int, need_output: bool) -> pa.Table:
    """The rejected rows of a rereadable part: those `_read` rejected, and its duplicate ids read again."""
    rejected = rejected.set_column(rejected.column_names.index(ROW), ROW, pc.add(rejected[ROW], row_start))
    if not len(dups):
        return rejected
    again = read_part(part, cols).take(pa.array(dups, pa.int64()))
    again = validate_table(again, cols, max_chars=max_chars, need_output=need_output)
    again = again.set_column(again.column_names.index(REJECT), REJECT, pa.array(["duplicate_id"] * len(dups)))
    again = again.append_column(ROW, pa.array(row_start + np.asarray(dups, np.int64)))
    return pa.concat_tables([rejected, again], promote_options="permissive")


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


def read_pool(files: list[tuple[str, str]], columns: ColumnsConfig, read: ReadConfig, *, need_output: bool,
              progress: bool = False, text_in_file: bool = True) -> Pool:
    """Read, validate, number and de-duplicate the input files (from `resolve_inputs`).
    `text_in_file`: local Parquet rows stay in their files (False: every block in the object store)."""
    cols = resolve_columns(columns, files)
    # One Ray task per part, no Ray Data: the read is a single pass whose fixed cost (planning,
    # listing, an executor) would be most of its time; see docs/methods.md "Speed".
    parts = plan_parts(files, text_in_file=text_in_file)
    blocks, key_refs = [], []
    for part in parts:
        b, k = _read.remote(part, cols, read.max_chars, need_output)
        blocks.append(b)
        key_refs.append(k)
    try:
        keys = gather(key_refs, progress=progress, desc="read: parts", unit="part")
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
    keep = pa.array(ok)
    usable_ids = ids.filter(keep)
    usable_hashes = all_keys[HASH].combine_chunks().cast(pa.large_string()).filter(keep)
    usable, rejected = [], []
    for part, b, start, pstart, n in zip(parts, blocks, row_starts.tolist(), pos_starts.tolist(), sizes):
        dups = dup_rows[(dup_rows >= start) & (dup_rows < start + n)] - start
        if part.rereadable:
            local = np.flatnonzero(ok[start:start + n])
            # Their own buffers, typed as the validated tables' (a slice, cast or not, keeps and pickles
            # the whole pool's data buffer: 40 parts of a 5M-row pool held 7 GB of ids that way).
            own = [pa.concat_arrays([a[pstart:pstart + len(local)]]).cast(pa.string()) for a in (usable_ids, usable_hashes)]
            usable.append(ray.put(DiskBlock(part, cols, local, start, pstart, *own)))
            rejected.append(_rejected_on_disk.remote(b, part, cols, start, dups, read.max_chars, need_output))
        else:
            u, r = _split.remote(b, start, pstart, dups)
            usable.append(u)
            rejected.append(r)
    b = blocks = None  # each validated block is freed once its split has run: the text is held once
    rejected_tables = [t for t in ray.get(rejected) if t.num_rows]
    rejected_table = pa.concat_tables(rejected_tables, promote_options="permissive") if rejected_tables else pa.table({})
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


def gather(refs: list, *, progress: bool, desc: str, unit: str) -> list:
    """ray.get of task results, in order, with a bar of tasks done; the first task to fail
    raises at once, not after the others."""
    from tqdm.auto import tqdm

    with tqdm(total=len(refs), desc=desc, unit=unit, disable=not progress) as bar:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            bar.update(len(done))
    return ray.get(refs)


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
