"""What one run knows as it goes: the config, where it writes, and each stage's result.

The pipeline creates a `RunContext`, every stage fills in its part, and the method
selects from it. Stages and methods read the fields they declared they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selectray.storage import Location


@dataclass
class Rejects:
    """Rows the stages after `read` could not use, by position: the first reason given wins.

    The read stage's rejects are rows of the input (`Pool.rejected`); these are usable
    rows that a later stage found unusable (a vector with NaN, a response too long for a
    rater). Both end in rejected.parquet and in the counts by reason.
    """

    late: dict[int, str] = field(default_factory=dict)

    def add(self, positions: Any, reason: str) -> None:
        for p in np.asarray(positions, dtype=np.int64).tolist():
            self.late.setdefault(int(p), reason)

    def add_reasons(self, reasons: dict[int, str]) -> None:
        for p, r in reasons.items():
            self.late.setdefault(int(p), r)

    def usable(self, n: int) -> np.ndarray:
        """Mask over the pool's positions: False where a later stage rejected the row."""
        mask = np.ones(n, dtype=bool)
        mask[np.fromiter(self.late, dtype=np.int64, count=len(self.late))] = False
        return mask


@dataclass
class RunContext:
    """One run's state, filled stage by stage (arrays are indexed by `pos`)."""

    cfg: Any  # the RunConfig
    out: Location
    gpus: bool  # the cluster has GPUs
    progress: bool  # show progress bars
    rescore: bool = False  # SelectIT levels from cached probabilities only
    seeds: list[str] = field(default_factory=list)  # k-center seed ids
    pool: Any = None  # stages.read.Pool
    budget: int = 0
    rejects: Rejects = field(default_factory=Rejects)
    embeddings: Any = None  # stages.embed.Embeddings
    clusters: Any = None  # stages.kcenter.Clusters
    scores: Any = None  # stages.score.Scores
    picks: Any = None  # stages.pick.Picks
    lengths: np.ndarray | None = None  # characters of instruction + input + output

    def usable(self) -> np.ndarray:
        return self.rejects.usable(self.pool.num_usable)
