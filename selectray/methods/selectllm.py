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
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="smollm2-135m"), description="Rater model served by Ray Serve (with `url`: the server's model id).")
    url: str | None = Field(None, description="An OpenAI-compatible server to rate with (`selectray serve`, `serve deploy "
                            "jobs/serve_raters.yaml`, vLLM, Ray Serve LLM, a hosted API), with or without `/v1`; null: "
                            "start the rater app in this run.")
    max_in_flight: int = Field(8, gt=0, description="Concurrent requests to the rater.")
    max_tokens: int = Field(24, gt=0, description="Completion tokens the rater may write.")
    retries: int = Field(4, ge=0, description="Retries (with exponential backoff) per failed request.")
    timeout_s: float = Field(300, gt=0, description="Per-request timeout.")
    api: Literal["auto", "chat", "completions"] = Field(
        "auto", description="Route of the picks: 'auto' (chat when the model has a chat template, as our app lists it; "
        "another server is tried once with chat, else completions), 'chat' or 'completions'.")
    api_key_env: str = Field(
        "SELECTRAY_API_KEY", min_length=1,
        description="Environment variable whose value goes to the rater at `url` as 'Authorization: Bearer <key>' (when set).")


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
        want = ctx.cfg.selectllm.picks
        chosen, how = choose_rows(p.picked, [p.fallback_order(g) for g in range(len(p.groups))], p.stats.status,
                                  want, np.where(usable, p.owner, -1), p.distance, ctx.budget)
        picked_by = np.full(len(usable), None, dtype=object)
        picked_by[chosen] = how
        reasons, counts = np.unique(np.asarray(how, dtype=object), return_counts=True) if len(how) else ([], [])
        stats = {"groups": len(p.groups), "grouping": p.grouping, "fallbacks": p.stats.fallbacks,
                 "chosen_by": {str(r): int(c) for r, c in zip(reasons, counts)}, "never_shown": p.never_shown}
        return Selection(chosen, {"cluster_id": p.owner, "group_id": p.group_of, "picked_by": picked_by}, stats=stats)

    def report(self, ctx, selection, figures):
        stats = {k: v for k, v in asdict(ctx.picks.stats).items() if k not in ("answers", "status")}
        return {"selectllm": {**stats, "chosen_by": selection.stats["chosen_by"],
                              "never_shown": selection.stats["never_shown"]}}


RATER = "rater"  # a row the rater picked; every other selected row carries its fallback reason


def choose_rows(picked: list[np.ndarray], fallback_order: list[np.ndarray], status: list[str], picks: int,
                owner: np.ndarray, distance: np.ndarray, budget: int) -> tuple[np.ndarray, list[str]]:
    """Exactly `budget` rows (when the pool has them), best first, and how each was chosen.

    Each group contributes its rater's picks, then, when it asked for more than the answer
    gave, its candidates nearest the center, marked with the group's status ("unparsable"
    or "failed_request"). Rank order: every group's first row, then every second row, ...;
    a row chosen twice (it sat in two groups) counts once. A shortfall is filled from the
    largest clusters, one row per cluster in turn, nearest to its center first, marked
    "short_group". Rows whose `owner` is -1 are never chosen by a fallback.
    """
    per_group: list[list[tuple[int, str]]] = []
    for g, rows in enumerate(picked):
        mine = [(int(p), RATER) for p in rows]
        want = min(picks, len(fallback_order[g]))
        reason = status[g] if status[g] != "ok" else "unparsable"
        for p in fallback_order[g]:
            if len(mine) >= want:
                break
            if int(p) not in {q for q, _ in mine} and owner[int(p)] >= 0:
                mine.append((int(p), reason))
        per_group.append(mine)
    depth = max((len(m) for m in per_group), default=0)
    ranked: dict[int, str] = {}
    for d in range(depth):
        for m in per_group:
            if d < len(m) and m[d][0] not in ranked and len(ranked) < budget:
                ranked[m[d][0]] = m[d][1]
    if len(ranked) < budget:
        taken = np.zeros(len(owner), dtype=bool)
        taken[list(ranked)] = True
        valid = np.flatnonzero((owner >= 0) & ~taken)
        queues = {}
        for c in np.unique(owner[valid]):
            members = valid[owner[valid] == c]
            queues[int(c)] = list(members[np.argsort(distance[members], kind="stable")])
        order = sorted(queues, key=lambda c: (-len(queues[c]), c))
        while len(ranked) < budget and any(queues[c] for c in order):
            for c in order:
                if queues[c] and len(ranked) < budget:
                    ranked[int(queues[c].pop(0))] = "short_group"
    return np.fromiter(ranked, dtype=np.int64, count=len(ranked)), list(ranked.values())
