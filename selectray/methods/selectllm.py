"""SelectLLM (Parkar et al., 2024): groups of candidates from k-center clusters (or the released
code's k-means regions); a rater LLM served by Ray Serve picks the best of each group."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Literal

import numpy as np
from pydantic import Field

from selectray.methods.base import Method
from selectray.settings import ModelSpec, Section
from selectray.stages.pick import PickStage
from selectray.stages.selection import Selection


class SelectLLMSettings(Section):
    """SelectLLM picking: candidate groups and the rater."""

    grouping: Literal["kcenter", "kmeans-regions"] = Field("kcenter", description="How candidate groups are formed.")
    candidates: int = Field(10, gt=1, description="Candidates shown to the rater per group (r).")
    picks: int = Field(1, gt=0, description="Rows the rater picks per group (m).")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="smollm2-135m"), description="Rater model served by Ray Serve.")
    url: str | None = Field(None, description="Use an already running rater app at this base URL instead of starting one.")
    max_in_flight: int = Field(8, gt=0, description="Concurrent requests to the rater.")
    max_tokens: int = Field(24, gt=0, description="Completion tokens the rater may write.")
    retries: int = Field(4, ge=0, description="Retries (with exponential backoff) per failed request.")
    timeout_s: float = Field(300, gt=0, description="Per-request timeout.")


class SelectLLM(Method):
    name = "selectllm"
    summary = ("SelectLLM: k-center clusters of the embeddings (k = budget / picks), then a rater LLM served by "
               "Ray Serve reads up to `candidates` rows of each cluster and picks the best")
    settings = SelectLLMSettings
    needs_embeddings = True
    stages = (PickStage(),)

    def clusters(self, cfg, budget):
        sl = cfg.selectllm
        return math.ceil(budget / sl.picks) if sl.grouping == "kcenter" else None

    def select(self, ctx, usable):
        p = ctx.picks
        chosen = exact_budget(p.picked, np.where(usable, p.owner, -1), p.distance, ctx.budget)
        stats = {"groups": len(p.groups), "grouping": p.grouping, "fallbacks": p.stats.fallbacks}
        return Selection(chosen, {"cluster_id": p.owner, "group_id": p.group_of}, stats=stats)

    def report(self, ctx, selection, figures):
        return {"selectllm": {k: v for k, v in asdict(ctx.picks.stats).items() if k != "answers"}}


def exact_budget(picked: list[np.ndarray], owner: np.ndarray, distance: np.ndarray, budget: int) -> np.ndarray:
    """Picks in rank order (every group's first pick, then every second pick, ...), cut or topped up to `budget`.

    A shortfall (groups smaller than the picks asked of them) is filled from the largest
    clusters, one row per cluster in turn, nearest to its center first.
    """
    depth = max((len(p) for p in picked), default=0)
    ranked = [int(p[d]) for d in range(depth) for p in picked if d < len(p)]
    ranked = list(dict.fromkeys(ranked))[:budget]
    if len(ranked) < budget:
        taken = np.zeros(len(owner), dtype=bool)
        taken[ranked] = True
        valid = np.flatnonzero((owner >= 0) & ~taken)
        queues = {}
        for c in np.unique(owner[valid]):
            members = valid[owner[valid] == c]
            queues[int(c)] = list(members[np.argsort(distance[members], kind="stable")])
        order = sorted(queues, key=lambda c: (-len(queues[c]), c))
        while len(ranked) < budget and any(queues[c] for c in order):
            for c in order:
                if queues[c] and len(ranked) < budget:
                    ranked.append(int(queues[c].pop(0)))
    return np.asarray(ranked, dtype=np.int64)
