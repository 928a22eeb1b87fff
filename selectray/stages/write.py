"""Write stage: selected.parquet and rejected.parquet, original columns kept untouched.

Internal columns (`pos`, `_hash`, `_row`, ...) never reach the selected output;
rejected rows keep their input row number as `input_row` and the `reason`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from selectray.columns import INPUT_ROW, POS, RANK, RAW_LINE, REASON, REJECT, ROW, is_internal
from selectray.stages.read import rows_at
from selectray.stages.read_files import open_block
from selectray.stages.selection import Selection
from selectray.storage import Location


@ray.remote
def _pick(block, chosen_pos: np.ndarray, ranks: np.ndarray, columns: dict[str, np.ndarray]) -> pa.Table:
    table = open_block(block)
    pos = table[POS].to_numpy()
    where = np.searchsorted(chosen_pos, pos)
    where = np.minimum(where, len(chosen_pos) - 1)
    hit = chosen_pos[where] == pos
    picked = table.filter(pa.array(hit))
    picked_pos = pos[hit]
    for name, values in columns.items():
        picked = picked.append_column(name, pa.array(values[picked_pos]))
    return picked.append_column(RANK, pa.array(ranks[where[hit]]))


def gather_lengths(pool) -> np.ndarray:
    """Characters of instruction + input + output of every usable row, indexed by pos."""
    cols = pool.columns.text

    @ray.remote
    def lengths(block) -> tuple[np.ndarray, np.ndarray]:
        table = open_block(block, [*cols, POS])
        total = np.zeros(table.num_rows, dtype=np.int64)
        for c in cols:
            if c in table.column_names:
                total += pc.fill_null(pc.utf8_length(table[c]), 0).to_numpy(zero_copy_only=False)
        return table[POS].to_numpy(), total

    out = np.zeros(pool.num_usable, dtype=np.int64)
    for pos, total in ray.get([lengths.remote(b) for b in pool.blocks]):
        out[pos] = total
    return out


def write_selected(pool, selection: Selection, path: Location) -> int:
    """Write the chosen rows, sorted by rank, with `rank` and the selection's columns."""
    order = np.argsort(selection.positions, kind="stable")
    chosen = np.ascontiguousarray(selection.positions[order])
    ranks = (order + 1).astype(np.int64)
    if len(chosen) == 0:
        raise ValueError("nothing was selected")
    chosen_ref, ranks_ref, cols_ref = ray.put(chosen), ray.put(ranks), ray.put(selection.columns)
    parts = [t for t in ray.get([_pick.remote(b, chosen_ref, ranks_ref, cols_ref) for b in pool.blocks]) if t.num_rows]
    table = pa.concat_tables(parts, promote_options="permissive").sort_by(RANK)
    table = table.drop_columns([c for c in table.column_names if is_internal(c)])
    path.write_parquet(table)
    return table.num_rows


@ray.remote
def _late(block, positions: np.ndarray, reasons: dict[int, str]) -> pa.Table:
    picked = rows_at(block, None, positions)
    return picked.append_column(REJECT, pa.array([reasons[p] for p in picked[POS].to_pylist()], pa.string()))


def write_rejected(pool, path: Location, late: dict[int, str] | None = None) -> int:
    """Write every rejected row with `reason` and `input_row` (0-based row number in the input).

    `late` are usable rows that a later stage could not use (pos -> reason), e.g. a
    vector with NaN or a response too long for a rater.
    """
    parts = [pool.rejected] if pool.rejected.num_rows else []
    if late:
        positions = np.fromiter(late, dtype=np.int64)
        parts += [t.drop_columns([POS]) for t in ray.get([_late.remote(b, positions, late) for b in pool.blocks]) if t.num_rows]
    if not parts:
        t = pa.table({"id": pa.array([], pa.string()), REASON: pa.array([], pa.string()),
                      INPUT_ROW: pa.array([], pa.int64())})
    else:
        t = pa.concat_tables(parts, promote_options="permissive")
        t = t.rename_columns([{REJECT: REASON, ROW: INPUT_ROW, RAW_LINE: "raw_line"}.get(c, c) for c in t.column_names])
        t = t.drop_columns([c for c in t.column_names if c.startswith("_")]).sort_by(INPUT_ROW)
    path.write_parquet(t)
    return t.num_rows


def reject_counts(pool, late: dict[int, str]) -> dict[str, int]:
    """Rejected rows by reason: the read stage's and later stages'."""
    reasons = list(pool.rejected[REJECT].to_pylist()) if pool.rejected.num_rows else []
    reasons += list(late.values())
    values, counts = np.unique(np.asarray(reasons, dtype=object), return_counts=True) if reasons else ([], [])
    return {str(r): int(c) for r, c in zip(values, counts)}
