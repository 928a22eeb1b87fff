"""`selectray plan`: what a run will cost, before anything heavy starts.

One columnar pass over the input (the read stage's own validation, pyarrow only, no Ray)
gives every row's id and content hash and the text of a seeded sample; each configured
model's tokenizer counts the sample's tokens. From those: usable rows, the work of every
stage (rows to embed, (row, prompt) pairs to score, rater requests, forward passes,
tokens), what an existing output folder already holds (the scores/ cache is keyed by row
content hash and prompt hash, embeddings/ and kcenter/ by their manifests), and the time
and GPU-hours per stage from throughputs: measured now (`--measure`), given in a file for
a cluster's GPUs (`--throughput`), or kept from earlier runs on this hardware
(selectray.report.history).
"""

from __future__ import annotations

import math

from selectray.errors import SelectrayError
from selectray.plan.scan import (
    SAMPLE_ROWS,
    Scan,
    embed_cached,
    kcenter_cached,
    rating_tokens,
    request_tokens,
    scan_input,
    score_cached,
)
from selectray.report.history import UNITS, hardware_key, lookup, model_tag, rate_keys
from selectray.storage import Location


def stage_gpus(cfg, stage: str, gpus: bool) -> float:
    """GPUs a stage holds while it runs (its actor pool or replicas at their largest)."""
    if stage == "embed":
        return cfg.embed.resources().gpus(gpus) * cfg.embed.concurrency[1]
    if stage == "kcenter":
        return (1 if gpus else 0) * cfg.kcenter.num_shards
    if stage == "score":
        return max(m.resources().gpus(gpus) * m.concurrency[1] for m in cfg.selectit.models)
    if stage == "pick" and cfg.selectllm.url is None:
        return cfg.selectllm.model.resources().gpus(gpus) * cfg.serve.max_replicas
    return 0.0


def count_work(cfg, scan: Scan, gpus: bool) -> tuple[dict, int]:
    """Every stage's work (rows, pairs, requests, forward passes, tokens, cache hits); and the budget."""
    from types import SimpleNamespace

    from selectray.methods import METHODS
    from selectray.pipeline import check_budget
    from selectray.prompts import check_rating_prompts
    from selectray.stages.kcenter import seed_ids

    method = METHODS[cfg.method]
    seeds = seed_ids(cfg.kcenter)
    budget = check_budget(cfg, SimpleNamespace(num_usable=scan.num_usable, num_input=scan.num_input), seeds)
    out, n = Location(cfg.output), scan.num_usable
    stages: dict[str, dict] = {"read": {"rows": scan.num_input, "work": scan.num_input}}
    embedded = 0
    if method.needs_embeddings or cfg.report.coverage:
        # A method that needs no embeddings embeds only the coverage figure's rows (selectray.coverage):
        # a pool sample, the selection (or a sample of it) and a random subset as large; at most this many.
        sample = min(n, cfg.report.coverage_sample)
        need = n if method.needs_embeddings else min(n, sample + 2 * min(budget, cfg.report.coverage_sample))
        embedded = min(n, embed_cached(out, scan, cfg.embed))
        todo = max(0, need - embedded) if embedded < n else 0
        stages["embed"] = {"rows": need, "cached_rows": min(embedded, need), "rows_to_embed": todo, "model": cfg.embed.model,
                           "forward_passes": 0 if cfg.embed.model == "hash" else math.ceil(todo / cfg.embed.encode_batch_size),
                           "work": todo, "pool_embedded": method.needs_embeddings}
    k = method.clusters(cfg, budget)
    if k is not None:
        reused = embedded == n and kcenter_cached(out, k, cfg, len(seeds))
        stages["kcenter"] = {"rows": n, "k": k, "reused": reused, "work": 0 if reused else float(n) * k}
    names = {s.name for s in method.stages}
    if "score" in names:
        sit, kp = cfg.selectit, len(check_rating_prompts(cfg.selectit.prompts))
        models = {}
        for spec in sit.models:
            pairs = n * kp
            m = {"pairs": pairs, "cached_pairs": score_cached(out, scan, spec, sit, gpus)}
            m["pairs_to_score"] = pairs - m["cached_pairs"]
            m["forward_passes"] = math.ceil(m["pairs_to_score"] / spec.batch_size)
            try:
                m.update(rating_tokens(spec, sit, scan.sample))
                m["tokens_to_score"] = round(m["pairs_to_score"] * m["tokens_per_pair"])
            except (SelectrayError, OSError, ValueError) as e:
                m["tokens_error"] = " ".join(str(e).split())
            models[model_tag(spec)] = m
        stages["score"] = {"models": models, "prompts": kp, **{key: sum(m[key] for m in models.values()) for key in (
            "pairs", "cached_pairs", "pairs_to_score", "forward_passes")}}
        stages["score"]["work"] = stages["score"]["pairs_to_score"]
    if "pick" in names:
        sl = cfg.selectllm
        requests = math.ceil(budget / sl.picks)
        shown = min(sl.candidates, max(1, n // requests))
        p = {"requests": requests, "candidates_per_request": shown, "max_completion_tokens_per_request": sl.max_tokens,
             "forward_passes_max": requests * (1 + sl.max_tokens), "work": requests}
        try:
            p.update(request_tokens(sl, scan.sample, shown))
            p["prompt_tokens"] = round(requests * p["prompt_tokens_per_request"])
        except (SelectrayError, OSError, ValueError) as e:
            p["tokens_error"] = " ".join(str(e).split())
        stages["pick"] = p
    return stages, budget


def estimate(cfg, stages: dict, gpus: bool, *, measured: dict | None = None, given: dict | None = None) -> None:
    """Add `rate`, `rate_source`, `seconds` and `gpu_hours` to each stage (in place)."""
    keys, hw = rate_keys(cfg), hardware_key(cfg.ray)
    given = given or {}
    for stage, st in stages.items():
        key, rate, fixed, source = keys.get(stage, stage), None, 0.0, None
        if measured and stage in measured:
            rate, source = measured[stage], "measured now"
        elif key in given or stage in given:
            rate, source = float(given.get(key, given.get(stage))), "throughput file"
        elif stage == "score" and all(f"score:{t}:{cfg.selectit.layout}" in given for t in st["models"]):
            secs = sum(m["pairs_to_score"] / float(given[f"score:{t}:{cfg.selectit.layout}"]) for t, m in st["models"].items())
            rate, source = (st["work"] / secs if secs else None), "throughput file (per model)"
        elif (found := lookup(hw, key)) is not None:
            rate, fixed, n = found
            source = f"{n} earlier run{'s' if n > 1 else ''} on this hardware" + (f", + {fixed:.1f} s start-up" if fixed else "")
        st.update(rate_key=key, unit=UNITS.get(stage), rate=rate, fixed_seconds=fixed, rate_source=source)
        st["seconds"] = 0.0 if not st["work"] else (fixed + st["work"] / rate if rate else None)
        st["gpus"] = stage_gpus(cfg, stage, gpus)
        st["gpu_hours"] = None if st["seconds"] is None else st["seconds"] * st["gpus"] / 3600


def make_plan(cfg, *, measure: bool = False, given: dict | None = None, sample_rows: int = SAMPLE_ROWS) -> dict:
    """The plan of a run with this config (see the module docstring)."""
    from selectray.resources import cuda_available

    try:
        from selectray.models import pin_models

        cfg = pin_models(cfg)  # the same model names (and cache keys) a run would use
    except ImportError:
        pass
    given = dict(given or {})
    gpus = bool(given.pop("gpus", False)) if cfg.ray.address is not None else cuda_available()
    scan = scan_input(cfg, _needs_responses(cfg), sample_rows)
    stages, budget = count_work(cfg, scan, gpus)
    measured = None
    if measure:
        from selectray.plan.measure import measure_rates

        measured = measure_rates(cfg, scan, stages)
    estimate(cfg, stages, gpus, measured=measured, given=given.get("rates", given))
    known = [s["seconds"] for s in stages.values() if s["seconds"] is not None]
    return {"config_method": cfg.method, "input_rows": scan.num_input, "usable_rows": scan.num_usable,
            "rejected_rows": scan.num_input - scan.num_usable, "rejected_by_reason": scan.rejected, "budget": budget,
            "hardware": hardware_key(cfg.ray), "gpus": gpus, "sample_rows": len(scan.sample), "output": cfg.output,
            "stages": stages, "total_seconds": sum(known),
            "total_gpu_hours": sum(s["gpu_hours"] or 0 for s in stages.values()),
            "unknown_stages": [name for name, s in stages.items() if s["seconds"] is None]}


def _needs_responses(cfg) -> bool:
    from selectray.methods import METHODS

    return METHODS[cfg.method].needs_responses
