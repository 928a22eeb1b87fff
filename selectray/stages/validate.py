"""The read stage's filter: row validation, ids and JSONL parsing. Pure pyarrow/Python, no Ray.

A validated table keeps every original column and adds three (selectray.columns):
`id` (string, the row's stable id), `_hash` (content hash of the text fields, the
key of every cache) and `_reject` (null, or the reason the row cannot be used). The
filter only decides; the read stage counts and writes the rejected rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectray.columns import HASH, ID, RAW_LINE, REJECT

# Part of every content hash: bump when the encoding changes, so that ids and caches made
# with another encoding never match (v2: length-prefixed fields; v1 joined them with \x1f,
# which ("a\x1fb", "c") and ("a", "b\x1fc") shared).
HASH_VERSION = b"selectray-row-v2"


@dataclass(frozen=True)
class TextColumns:
    """Resolved column names of one run (input/output may be absent from the data)."""

    instruction: str
    input: str | None
    output: str | None
    id: str | None  # None: content hash

    @property
    def text(self) -> list[str]:
        return [c for c in (self.instruction, self.input, self.output) if c]


def content_hash(instruction: str | None, input: str | None, output: str | None) -> str:
    """Stable 128-bit hash of a row's text fields (hex): each field length-prefixed, so no two
    different rows share an encoding; a missing field hashes as an empty one."""
    h = hashlib.blake2b(HASH_VERSION, digest_size=16)
    for field in (instruction, input, output):
        data = (field or "").encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def content_hashes(*fields: pa.Array) -> pa.Array:
    """`content_hash` of every row of three string arrays (nulls as empty): each row's
    length-prefixed bytes are joined by Arrow in one pass, so Python only calls blake2b once
    per row (Arrow strings are UTF-8 already, exactly what `content_hash` encodes)."""
    n = len(fields[0])
    parts: list = [pa.scalar(HASH_VERSION, pa.binary())]
    for f in fields:
        data = pc.fill_null(f.cast(pa.binary()), b"")
        size = pc.binary_length(data).to_numpy(zero_copy_only=False).astype("<u8")
        prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8), n, [None, pa.py_buffer(size.tobytes())])
        parts += [prefix.cast(pa.binary()), data]
    joined = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset: joined.offset + n + 1].tolist()
    data, blake = memoryview(joined.buffers()[2]), hashlib.blake2b
    return pa.array([blake(data[a:b], digest_size=16).hexdigest() for a, b in zip(offsets, offsets[1:])], pa.string())


def _text_or_null(table: pa.Table, name: str | None) -> pa.Array:
    if name is None or name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    col = table[name].combine_chunks()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_null(col.type):
        return col.cast(pa.string())
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        out = []
        for b in col.to_pylist():
            try:
                out.append(None if b is None else b.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(_BAD_UTF8)
        return pa.array(out, pa.string())
    raise TypeError(f"column '{name}' has type {col.type}; expected text")


_BAD_UTF8 = "\x00<bad-utf8>\x00"  # marker a decoded text can never equal


def _blank(col: pa.Array) -> pa.Array:
    return pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)


def validate_table(
    table: pa.Table, cols: TextColumns, *, max_chars: int, need_output: bool
) -> pa.Table:
    """Add `id`, `_hash` and `_reject` to a batch; rows are never dropped here.

    The first matching reason wins: bad_encoding, empty_instruction, missing_output
    (only when the method needs responses), missing_id, too_long. Duplicate ids need
    the whole input and are marked later.
    """
    n = table.num_rows
    instr = _text_or_null(table, cols.instruction)
    inp = _text_or_null(table, cols.input)
    out = _text_or_null(table, cols.output)

    reasons = table[REJECT].combine_chunks() if REJECT in table.column_names else pa.nulls(n, pa.string())

    def mark(mask: pa.Array, reason: str) -> None:
        nonlocal reasons
        hit = pc.and_(pc.is_null(reasons), pc.fill_null(mask, False))
        reasons = pc.if_else(hit, pa.scalar(reason, pa.string()), reasons)

    for c in (instr, inp, out):
        mark(pc.equal(c, _BAD_UTF8), "bad_encoding")
    mark(_blank(instr), "empty_instruction")
    if need_output:
        mark(_blank(out), "missing_output")

    if cols.id is not None:
        # A block without the id column (a JSON Lines file whose lines lack it) rejects each row.
        raw_id = table[cols.id].combine_chunks() if cols.id in table.column_names else pa.nulls(n, pa.string())
        ids = raw_id if pa.types.is_string(raw_id.type) else pc.cast(raw_id, pa.string())
        mark(_blank(ids), "missing_id")
    length = pc.add(
        pc.add(pc.fill_null(pc.utf8_length(instr), 0), pc.fill_null(pc.utf8_length(inp), 0)),
        pc.fill_null(pc.utf8_length(out), 0),
    )
    mark(pc.greater(length, max_chars), "too_long")

    hashes = content_hashes(instr, inp, out)
    if cols.id is None:
        ids = hashes

    result = table.drop_columns([c for c in (ID, HASH, REJECT) if c in table.column_names])
    result = result.append_column(ID, ids).append_column(HASH, hashes)
    return result.append_column(REJECT, reasons)


def parse_jsonl(data: bytes, text_columns: list[str]) -> pa.Table:
    """Parse JSON Lines bytes into a table; bad lines become rejected rows, not errors.

    A line that is not UTF-8 is `bad_encoding`, one that is not a JSON object is
    `bad_json`, and a text column holding a non-string is `bad_type`. Blank lines
    are skipped (they are not rows).
    """
    records: list[dict] = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            records.append({REJECT: "bad_encoding", RAW_LINE: raw.decode("utf-8", "replace")})
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            records.append({REJECT: "bad_json", RAW_LINE: line})
            continue
        for c in text_columns:
            v = obj.get(c)
            if v is not None and not isinstance(v, str):
                obj[c] = json.dumps(v)
                obj.setdefault(REJECT, "bad_type")
        records.append(obj)
    table = _records_to_table(records)
    # The same internal and text columns, typed as text, in every block of every file,
    # so blocks from different files concatenate.
    for name in (*text_columns, REJECT, RAW_LINE):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
        elif pa.types.is_null(table[name].type):
            table = table.set_column(table.column_names.index(name), name, table[name].cast(pa.string()))
    return table


def _records_to_table(records: list[dict]) -> pa.Table:
    # Column-wise, over the union of keys: pa.Table.from_pylist would take the
    # columns from the first record only and silently drop the rest.
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed types in a pass-through column (a number on one line, a string
            # on another): keep every value, JSON-encoded as text.
            columns[name] = pa.array(
                [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                pa.string(),
            )
    return pa.table(columns)
