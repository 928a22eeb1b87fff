"""Hybrid (ours): k-center clusters for coverage, each cluster's quota (proportional to its size)
filled with its best SelectIT scores."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from selectray.methods.base import Method
from selectray.methods.selectit import score_report
from selectray.settings import Section
from selectray.stages.score import ScoreStage
from selectray.stages.selection import proportional_quotas, select_hybrid


class HybridSettings(Section):
    """Hybrid method."""

    num_clusters: int | None = Field(None, gt=0, description="k-center clusters; null: budget / 5.")


class Hybrid(Method):
    name = "hybrid"
    summary = "both: k-center clusters for coverage, each cluster's quota (proportional to its size) filled with its best SelectIT scores"
    settings = HybridSettings
    needs_responses = True
    needs_embeddings = True
    stages = (ScoreStage(),)

    def clusters(self, cfg, budget):
        return min(cfg.hybrid.num_clusters or max(1, budget // 5), budget)

    def select(self, ctx, usable):
        levels, clusters = ctx.scores.levels, ctx.clusters
        assignment = np.where(usable, clusters.assignment, -1)
        sizes = np.bincount(assignment[assignment >= 0], minlength=len(clusters.centers))
        quotas = proportional_quotas(sizes, min(ctx.budget, int(usable.sum())))
        sel = select_hybrid(assignment, levels["score_model"], quotas)
        sel.columns = {**levels, "cluster_id": clusters.assignment}
        return sel

    def report(self, ctx, selection, figures):
        return {"selectit": score_report(ctx, selection, figures)}
