"""Input files for the read stage: which files, cut into parts of about one task's work, one part
read as an Arrow table, and the pool's blocks that stay in their file. Pure pyarrow (local
paths or object-store URIs), no Ray.

A part is some row groups of a Parquet file or a byte range of a JSON Lines file; parts in
order give the input's rows in order (Parquet files first, then JSON Lines, each sorted by
path), so a row's position never depends on how the input was cut.

A part of a local Parquet file can be read again cheaply and by row group, so its usable
rows do not need to be held in Ray's object store: the pool keeps a `DiskBlock` (which rows
of the part are usable, their ids and positions) and a stage opens it (`open_block`),
reading only the columns it needs. Other parts (JSON Lines, whose parsing is the costly
part; object storage, where every read is a download) are held in the object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectray.columns import HASH, ID, POS, REJECT, ROW
from selectray.errors import InputError
from selectray.settings import ColumnsConfig
from selectray.stages.validate import TextColumns, parse_jsonl
from selectray.storage import Location, is_uri

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
PART_ROWS = 131_072  # Parquet row groups are gathered up to this many rows per part
PART_BYTES = 64 << 20  # JSON Lines files are cut into ranges of this many bytes


@dataclass(frozen=True)
class Part:
    """One read task's share of the input: row groups of a Parquet file, or the lines of a JSON
    Lines file that start inside [start, end)."""

    path: str
    kind: str  # "parquet" | "jsonl"
    row_groups: tuple[int, ...] = ()
    start: int = 0
    end: int = -1  # -1: to the end of the file
    stamp: tuple[int, int] = (-1, -1)  # the file's (size, mtime_ns) when planned: a change is an error later
    rereadable: bool = False  # its usable rows stay in the file (a DiskBlock), not in the object store


def _kind(path: str, fmt: str) -> str | None:
    return fmt if fmt != "auto" else SUFFIXES.get(Path(path).suffix)


def resolve_inputs(paths: list[str], fmt: str) -> list[tuple[str, str]]:
    """Expand folders (local or object-store prefixes) and check every file up front, so a bad
    path fails before Ray starts work; Parquet files first, then JSON Lines."""
    files: list[tuple[str, str]] = []
    for raw in paths:
        loc = Location(raw)
        if not loc.exists():
            raise InputError(f"input not found: {raw}")
        found = [f.uri for f in _walk(loc)] if loc.is_dir() else [loc.uri]
        if not found:
            raise InputError(f"input folder {raw} holds no .parquet or .jsonl files")
        for f in found:
            kind = _kind(f, fmt)
            if kind is None:
                raise InputError(f"cannot tell the format of {f}; name it .parquet or .jsonl, or set read.format")
            try:
                if kind == "parquet":
                    _parquet(f).metadata  # noqa: B018 - reads the footer: a broken file fails here
                else:
                    file = Location(f)
                    file.fs.open_input_file(file.path).close()
            except (OSError, pa.ArrowException) as e:
                raise InputError(f"cannot read {f}: {str(e).splitlines()[0]}") from None
            files.append((f, kind))
    return [f for f in files if f[1] == "parquet"] + [f for f in files if f[1] == "jsonl"]


def _walk(folder: Location) -> list[Location]:
    """Every input-looking file under a folder, sorted by path; hidden and metadata files skipped."""
    import pyarrow.fs as pafs

    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True))
    # Names starting with "_" or "." are metadata (a `_generate.json`, `_SUCCESS`), as in Spark and Ray Data.
    paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and Path(i.path).suffix in SUFFIXES
                   and not any(p.startswith(("_", ".")) for p in i.path[len(folder.path):].split("/") if p))
    return [folder / p[len(folder.path):].lstrip("/") for p in paths]


def _parquet(path: str) -> pq.ParquetFile:
    loc = Location(path)
    return pq.ParquetFile(loc.fs.open_input_file(loc.path) if not loc.is_local else loc.path)


def resolve_columns(c: ColumnsConfig, files: list[tuple[str, str]]) -> TextColumns:
    """Decide the id column (`auto`) and check the mapped columns exist in Parquet inputs."""
    names: set[str] | None = None
    for path, kind in files:
        if kind == "parquet":
            schema_names = set(_parquet(path).schema_arrow.names)
            if c.instruction not in schema_names:
                raise InputError(
                    f"{path} has no column '{c.instruction}' (columns: {', '.join(sorted(schema_names))}); set columns.instruction"
                )
            if c.id not in (None, "auto") and c.id not in schema_names:
                raise InputError(f"{path} has no id column '{c.id}'; set columns.id to one of: {', '.join(sorted(schema_names))}")
            names = schema_names if names is None else names | schema_names
    id_col = c.id
    if id_col == "auto":
        id_col = ID if (names is None or ID in names) else None
    return TextColumns(c.instruction, c.input, c.output, id_col)


def plan_parts(files: list[tuple[str, str]], part_rows: int = PART_ROWS, part_bytes: int = PART_BYTES,
               text_in_file: bool = True) -> list[Part]:
    """Cut the input files (from `resolve_inputs`, in order) into parts of about one task's work.
    `text_in_file`: parts of local Parquet files are rereadable (their text is not held in memory)."""
    parts: list[Part] = []
    for path, kind in files:
        if kind == "parquet":
            meta = _parquet(path).metadata
            stamp, again = _stamp(path), text_in_file and not is_uri(path)
            group: list[int] = []
            rows = 0
            for g in range(meta.num_row_groups):
                group.append(g)
                rows += meta.row_group(g).num_rows
                if rows >= part_rows:
                    parts.append(Part(path, kind, tuple(group), stamp=stamp, rereadable=again))
                    group, rows = [], 0
            if group or not parts or parts[-1].path != path:
                parts.append(Part(path, kind, tuple(group), stamp=stamp, rereadable=again))
        else:
            loc = Location(path)
            size = loc.fs.get_file_info(loc.path).size or 0
            starts = list(range(0, max(size, 1), part_bytes))
            parts += [Part(path, kind, start=s, end=(s + part_bytes if s + part_bytes < size else -1)) for s in starts]
    return parts


def _stamp(path: str) -> tuple[int, int]:
    loc = Location(path)  # one filesystem client (for object storage, a new one per Location)
    info = loc.fs.get_file_info(loc.path)
    return int(info.size or 0), int(info.mtime_ns or 0)


def read_part(part: Part, cols: TextColumns, columns: list[str] | None = None) -> pa.Table:
    """The rows of one part, every original column kept (`columns`: only those, of a Parquet
    file); each text column asked for present (null when a file lacks it), so tables line up."""
    if part.kind == "jsonl":
        return parse_jsonl(_line_range(part), cols.text)
    pf = _parquet(part.path)
    names = pf.schema_arrow.names
    wanted = names if columns is None else [c for c in names if c in columns]
    table = pf.read_row_groups(list(part.row_groups), columns=wanted) if part.row_groups else pf.schema_arrow.empty_table().select(wanted)
    for name in cols.text:
        if name not in table.column_names and (columns is None or name in columns):
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return table


def _line_range(part: Part) -> bytes:
    """The lines of a JSON Lines file that start inside [start, end): a line cut by a range's end
    belongs to the range it starts in (a newline byte never occurs inside a UTF-8 character)."""
    loc = Location(part.path)
    with loc.fs.open_input_file(loc.path) as f:
        size = f.size()
        end = size if part.end < 0 else min(part.end, size)
        begin = max(part.start - 1, 0)
        f.seek(begin)
        data = f.read(end - begin)
        tail = []
        while end < size and not data.endswith(b"\n"):  # finish the range's last line
            more = f.read(1 << 16)
            cut = more.find(b"\n")
            tail.append(more if cut < 0 else more[: cut + 1])
            if cut >= 0 or not more:
                break
        data += b"".join(tail)
    if part.start > 0:  # the first line belongs to the previous range unless it starts here
        data = data[1:] if data[:1] == b"\n" else data[data.find(b"\n") + 1:] if b"\n" in data else b""
    return data


@dataclass(frozen=True)
class DiskBlock:
    """The usable rows of one rereadable part: where they are, and what the read stage gave them."""

    part: Part
    cols: TextColumns
    keep: np.ndarray  # indices of the usable rows within the part
    row_start: int  # input row number of the part's first row
    pos_start: int  # position of its first usable row
    ids: pa.Array  # the usable rows' ids and content hashes, in order
    hashes: pa.Array


def open_block(block, columns: list[str] | None = None) -> pa.Table:
    """A pool block as a table: an object-store block as it is; a `DiskBlock` read from its file,
    only `columns` (when given) and with the same columns and order the read stage gives
    (the file's columns, then id, _hash, _row, pos)."""
    if not isinstance(block, DiskBlock):
        return block
    part, cols = block.part, block.cols
    if _stamp(part.path) != part.stamp:
        raise InputError(f"input file {part.path} changed during the run; run again on a stable copy")
    internal = {ID: lambda: block.ids, HASH: lambda: block.hashes,
                ROW: lambda: pa.array(block.row_start + block.keep.astype(np.int64)),
                POS: lambda: pa.array(np.arange(block.pos_start, block.pos_start + len(block.keep), dtype=np.int64))}
    # The file's own id/_hash/_reject columns give way to the read stage's, as in validate_table.
    wanted = None if columns is None else [c for c in columns if c not in internal]
    table = read_part(part, cols, wanted).take(pa.array(block.keep, pa.int64()))
    out = {c: table[c] for c in table.column_names if c not in (ID, HASH, REJECT)}
    for name, values in internal.items():
        if columns is None or name in columns:
            out[name] = values()
    return pa.table(out)


def block_columns(block) -> list[str]:
    """The column names `open_block(block)` gives, without reading any rows."""
    if not isinstance(block, DiskBlock):
        return block.column_names
    names = [c for c in _parquet(block.part.path).schema_arrow.names if c not in (ID, HASH, REJECT)]
    return names + [c for c in block.cols.text if c not in names] + [ID, HASH, ROW, POS]
