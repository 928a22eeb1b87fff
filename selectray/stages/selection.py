"""Select stage: the method chooses; here are the `Selection` it returns, the pure ranking helpers
methods build on (arrays indexed by `pos`), and the checks every selection passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Selection:
    positions: np.ndarray  # chosen `pos` values, best first
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per usable row, indexed by pos
    stats: dict = field(default_factory=dict)  # method-specific numbers for the report


def seeded_keys(ids, seed: int, chunk: int = 100_000) -> np.ndarray:
    """A uniform pseudo-random 64-bit key per id (a sequence or an Arrow array), a function of
    (seed, id) alone; an Arrow array is read a chunk at a time, so few Python strings exist at once."""
    prefix = f"{seed}\x1f".encode()
    out = np.empty(len(ids), dtype=np.uint64)
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        part = part.to_pylist() if hasattr(part, "to_pylist") else part
        out[start:start + len(part)] = [
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "little") for i in part]
    return out


def select_random(ids: np.ndarray, budget: int, seed: int, usable: np.ndarray | None = None) -> Selection:
    """A seeded uniform sample: the usable rows with the smallest keyed hash of their id.

    A row's chance and rank depend only on (seed, id), so the same rows give the same
    selection whatever the input order, file format or other rows in the pool.
    """
    order = np.argsort(seeded_keys(ids, seed), kind="stable")
    if usable is not None:
        order = order[usable[order]]
    return Selection(order[:budget].astype(np.int64))


def select_length(lengths: np.ndarray, budget: int, usable: np.ndarray | None = None) -> Selection:
    """Longest instruction+input+output first; ties by position."""
    order = np.lexsort((np.arange(len(lengths)), -np.asarray(lengths)))
    if usable is not None:
        order = order[usable[order]]
    return Selection(order[:budget].astype(np.int64), {"length": np.asarray(lengths, dtype=np.int64)})


def top_scores(scores: np.ndarray, budget: int) -> np.ndarray:
    """Positions of the `budget` highest scores; ties by position (stable)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    return order[:budget].astype(np.int64)


def proportional_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split `budget` over clusters in proportion to their sizes.

    Largest-remainder rounding (ties: larger cluster, then lower id); every non-empty
    cluster gets at least one row while the budget allows (when it does not, the
    largest clusters get one each); no cluster gets more rows than it has.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if budget > total:
        raise ValueError(f"budget {budget} exceeds the {total} rows in the clusters")
    quotas = np.zeros(len(sizes), dtype=np.int64)
    nonempty = np.flatnonzero(sizes > 0)
    by_size = nonempty[np.lexsort((nonempty, -sizes[nonempty]))]
    if budget <= len(nonempty):
        quotas[by_size[:budget]] = 1
        return quotas
    ideal = budget * sizes / total
    quotas = np.floor(ideal).astype(np.int64)
    frac = ideal - quotas
    order = np.lexsort((np.arange(len(sizes)), -sizes, -frac))
    quotas[order[: budget - int(quotas.sum())]] += 1
    # At least one each: take from the clusters with the largest quotas.
    for c in by_size[::-1]:
        if quotas[c] == 0:
            donor = int(np.lexsort((np.arange(len(sizes)), -quotas))[0])
            quotas[donor] -= 1
            quotas[c] = 1
    return quotas


def select_hybrid(assignment: np.ndarray, scores: np.ndarray, quotas: np.ndarray) -> Selection:
    """The `quotas[c]` best-scored rows of each cluster c; ranked by score overall (ties by position)."""
    assignment = np.asarray(assignment)
    valid = np.flatnonzero(assignment >= 0)
    order = valid[np.lexsort((valid, -scores[valid], assignment[valid]))]  # by cluster, best first
    starts = np.searchsorted(assignment[order], np.arange(len(quotas)))
    chosen = np.concatenate([order[s:s + q] for s, q in zip(starts, quotas)]) if len(quotas) else np.empty(0, np.int64)
    ranked = chosen[np.lexsort((chosen, -scores[chosen]))]
    return Selection(ranked.astype(np.int64), stats={"quotas": quotas.tolist()})


def check_selection(selection: Selection, usable: np.ndarray, budget: int) -> Selection:
    """Every method's selection: distinct usable positions, at most `budget` of them."""
    pos = np.asarray(selection.positions, dtype=np.int64)
    if len(np.unique(pos)) != len(pos):
        raise RuntimeError("the method selected a row twice")
    if len(pos) and (pos.min() < 0 or pos.max() >= len(usable) or not usable[pos].all()):
        raise RuntimeError("the method selected a row that is not usable")
    if len(pos) > budget:
        raise RuntimeError(f"the method selected {len(pos)} rows for a budget of {budget}")
    selection.positions = pos
    return selection
