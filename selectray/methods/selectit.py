"""SelectIT (Liu et al., 2024): the rater LLMs' own uncertainty about a 1-5 rating, at token,
sentence and model level; the top scores. Formulas: selectray.scoring, docs/methods.md."""

from __future__ import annotations

import numpy as np

from selectray.methods.base import Method
from selectray.report import histogram
from selectray.settings import ScoreConfig
from selectray.stages.score import ScoreStage
from selectray.stages.selection import Selection, top_scores


class SelectIT(Method):
    name = "selectit"
    summary = ("SelectIT: the rater LLMs' uncertainty about a 1-5 rating at token, prompt (sentence) and "
               "model level; the top scores")
    settings = ScoreConfig
    needs_responses = True
    stages = (ScoreStage(),)

    def select(self, ctx, usable):
        levels = ctx.scores.levels
        ranked = top_scores(np.where(usable, levels["score_model"], -np.inf), min(ctx.budget, int(usable.sum())))
        return Selection(ranked, levels)

    def report(self, ctx, selection, figures):
        return {"selectit": score_report(ctx, selection, figures)}


def score_report(ctx, selection: Selection, figures) -> dict:
    """The SelectIT section of the report (also used by the hybrid method)."""
    cfg = ctx.cfg.selectit
    sm = ctx.scores.levels["score_model"]
    figures.add("SelectIT model-level score", histogram(sm, sm[selection.positions], xlabel="score_model"))
    out = {"alpha": cfg.alpha, "normalization": cfg.normalization, "layout": cfg.layout, "models": {}}
    for s in ctx.scores.models:
        mass_out = s.other[np.isfinite(s.other)]
        figures.add(f"{s.name}: probability mass outside the ratings 1-5", histogram(mass_out, xlabel="p_other"))
        out["models"][s.name] = {"params": s.params, "pairs_scored_this_run": s.computed_pairs,
                                 "cached_parts_reused": s.reused_parts,
                                 "truncated_rows": int(s.truncated.sum()), "too_long_rows": int(s.too_long.sum()),
                                 "mean_p_other": float(mass_out.mean()) if len(mass_out) else None}
    finite = sm[np.isfinite(sm)]
    out["score_model"] = {"mean": float(finite.mean()), "selected_mean": float(sm[selection.positions].mean())}
    return out
