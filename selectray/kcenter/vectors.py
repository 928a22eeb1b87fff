"""Input checks of greedy k-center: usable vectors, rejected rows, k, seeds. Pure numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectray.errors import SelectrayError
from selectray.kcenter.distances import sq_norms

REASON_NONFINITE = "nonfinite_embedding"
REASON_DIMENSION = "bad_dimension"
REASON_MISSING = "missing_embedding"


class KCenterError(SelectrayError, ValueError):
    """Bad k-center input (k, seeds, start, data); the message is one user-facing line."""


def storage_dtype(dtype) -> np.dtype:
    """float16 is kept as storage (computed in float32); anything else is stored float32."""
    return np.dtype(np.float16) if np.dtype(dtype) == np.float16 else np.dtype(np.float32)


@dataclass
class VectorRows:
    """Usable vectors, their positions and squared norms, and the rejected rows."""

    x: np.ndarray
    pos: np.ndarray
    norms: np.ndarray
    rejected_pos: np.ndarray
    rejected_reason: np.ndarray

    @property
    def n_total(self) -> int:
        return len(self.pos) + len(self.rejected_pos)


def validate_rows(rows: Any, dim: int | None = None, pos: np.ndarray | None = None) -> VectorRows:
    """Split input rows into usable vectors and rejected rows.

    `rows` is an (N, d) array, or a sequence of vectors (None or ragged allowed);
    `pos` their positions (default 0..N-1). A row is rejected as
    `nonfinite_embedding` when a value is NaN/inf (or so large that its squared norm
    overflows float32), `bad_dimension` when its length is not `dim` (default: the
    array's width, or the most common length of a sequence), `missing_embedding`
    when it is None.
    """
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        if rows.ndim != 2:
            raise KCenterError(f"vectors must be a 2-D array (rows x dimensions), got shape {rows.shape}")
        if not (np.issubdtype(rows.dtype, np.floating) or np.issubdtype(rows.dtype, np.integer)):
            raise KCenterError(f"vectors must be numeric, got dtype {rows.dtype}")
        x = np.ascontiguousarray(rows, dtype=storage_dtype(rows.dtype))
        pos = np.arange(len(x), dtype=np.int64) if pos is None else np.asarray(pos, np.int64)
        if dim is not None and x.shape[1] != dim:
            return VectorRows(x[:0], pos[:0], np.empty(0, np.float32), pos, _reasons(REASON_DIMENSION, len(pos)))
        return _drop_nonfinite(x, pos)
    if not isinstance(rows, Sequence | np.ndarray):
        raise KCenterError(f"vectors must be an array or a sequence of vectors, got {type(rows).__name__}")
    return _validate_sequence(list(rows), dim, pos)


def _reasons(reason: str, n: int) -> np.ndarray:
    return np.full(n, reason, dtype=object)


def _drop_nonfinite(x: np.ndarray, pos: np.ndarray) -> VectorRows:
    # A NaN/inf anywhere in a row makes its float32 squared norm non-finite, so the
    # norms (needed anyway) double as the validity check: no extra pass over x.
    with np.errstate(over="ignore", invalid="ignore"):
        norms = sq_norms(x)
    ok = np.isfinite(norms)
    if ok.all():
        return VectorRows(x, pos, norms, np.empty(0, np.int64), np.empty(0, object))
    return VectorRows(x[ok], pos[ok], norms[ok], pos[~ok], _reasons(REASON_NONFINITE, int((~ok).sum())))


def _validate_sequence(rows: list, dim: int | None, pos: np.ndarray | None) -> VectorRows:
    pos = np.arange(len(rows), dtype=np.int64) if pos is None else np.asarray(pos, np.int64)
    vecs = [None if r is None else np.asarray(r).reshape(-1) for r in rows]
    if dim is None:
        lengths = [len(v) for v in vecs if v is not None]
        if not lengths:
            raise KCenterError("no vectors in the input")
        values, counts = np.unique(lengths, return_counts=True)
        dim = int(values[np.argmax(counts)])
    ok, bad, why = [], [], []
    for i, v in enumerate(vecs):
        if v is None:
            reason = REASON_MISSING
        elif len(v) != dim:
            reason = REASON_DIMENSION
        elif not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            reason = REASON_NONFINITE
        else:
            ok.append(i)
            continue
        bad.append(i)
        why.append(reason)
    store = np.float16 if ok and all(vecs[i].dtype == np.float16 for i in ok) else np.float32
    x = np.array([vecs[i] for i in ok], dtype=store).reshape(len(ok), dim)
    good = _drop_nonfinite(x, pos[np.asarray(ok, np.int64)])
    rej_pos = np.concatenate([pos[np.asarray(bad, np.int64)], good.rejected_pos])
    rej_why = np.concatenate([np.asarray(why, dtype=object), good.rejected_reason])
    order = np.argsort(rej_pos, kind="stable")
    return VectorRows(good.x, good.pos, good.norms, rej_pos[order], rej_why[order])


def check_k(k: Any, usable: int, n_forced: int) -> int:
    """k as an int, or a KCenterError saying why it cannot be used."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise KCenterError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k <= 0:
        raise KCenterError(f"k must be positive, got {k}")
    if k > usable:
        raise KCenterError(f"k={k} exceeds the {usable} usable rows")
    if n_forced > k:
        raise KCenterError(f"{n_forced} seeds exceed k={k}")
    return k


def check_seeds(seeds: Any, start: Any, usable_pos: np.ndarray, n_rows: int, rejected: dict[int, str]) -> list[int]:
    """The forced first centers as positions: the seeds, else [start], else [smallest usable pos].

    Raises KCenterError for non-integer, repeated or out-of-range positions, rejected
    rows, or seeds and start given together.
    """
    seeds = [] if seeds is None else list(np.asarray(seeds, dtype=object).reshape(-1))
    if seeds and start is not None:
        raise KCenterError("give either seeds or start, not both")
    if seeds:
        forced = seeds
    elif start is not None:
        forced = [start]
    else:
        forced = [int(usable_pos.min())]
    out = []
    for p in forced:
        if isinstance(p, bool) or not isinstance(p, int | np.integer):
            raise KCenterError(f"seed and start positions must be integers, got {p!r}")
        out.append(int(p))
    outside = [p for p in out if not 0 <= p < n_rows]
    if outside:
        raise KCenterError(f"seed/start positions not in the pool of {n_rows} rows: {preview(outside)}")
    bad = [f"{p} ({rejected[p]})" for p in out if p in rejected]
    if bad:
        raise KCenterError(f"seed/start rows were rejected: {preview(bad)}")
    if len(set(out)) != len(out):
        seen: set[int] = set()
        dup = [p for p in out if p in seen or seen.add(p)]
        raise KCenterError(f"seed positions repeat: {preview(dup)}")
    return out


def preview(items: list, n: int = 5) -> str:
    """The first `n` items as text, with how many more there are."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more

