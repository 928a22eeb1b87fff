"""The baselines a user compares against: seeded random, longest first, and the k-center centers."""

from __future__ import annotations

import numpy as np

from selectray.methods.base import Method
from selectray.stages.selection import Selection, select_length, select_random


class Random(Method):
    name = "random"
    summary = "baseline: a seeded uniform sample (a row's chance depends on the seed and its id only)"

    def select(self, ctx, usable):
        return select_random(ctx.pool.ids, ctx.budget, ctx.cfg.seed, usable)


class Length(Method):
    name = "length"
    summary = "baseline: the longest instruction + input + output first"

    def select(self, ctx, usable):
        return select_length(ctx.lengths, ctx.budget, usable)


class KCenter(Method):
    name = "kcenter"
    summary = "the Coreset baseline: the k = budget greedy k-center centers (kcenter.seeds are covered, not selected)"
    needs_embeddings = True
    takes_seeds = True

    def clusters(self, cfg, budget):
        from selectray.stages.kcenter import seed_ids

        return len(seed_ids(cfg.kcenter)) + budget

    def select(self, ctx, usable):
        c = ctx.clusters
        chosen = c.centers[c.n_seeds:]
        return Selection(chosen, {"cluster_id": c.assignment, "distance": c.distance.astype(np.float32)},
                         stats={"radius": float(c.radii[-1])})
