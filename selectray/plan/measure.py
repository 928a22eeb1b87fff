"""`selectray plan --measure`: stage throughputs measured here on the plan's sample (a short calibration:
each model loaded once, its first call left out as a warm-up)."""

from __future__ import annotations

import math
import time

import numpy as np

from selectray.plan.scan import Scan
from selectray.report.history import model_tag


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return max(time.perf_counter() - start, 1e-9)


def measure_rates(cfg, scan: Scan, stages: dict) -> dict[str, float]:
    """Work per second of each stage, measured in this process on the sample (models loaded once,
    the first call left out as a warm-up)."""
    from selectray.stages.embed import (
        HashEncoder,
        SentenceEncoder,
        embedding_text,
        l2_normalise,
        resolve_embedder,
    )

    rates = {"read": scan.num_input / max(scan.seconds, 1e-9)}
    texts = [embedding_text(i, x or None) for i, x, _ in scan.sample]
    vectors = None
    if "embed" in stages or "kcenter" in stages:
        e = cfg.embed
        enc = HashEncoder(dim=e.hash_dim) if e.model == "hash" else SentenceEncoder(
            resolve_embedder(e.model), e.encode_batch_size, e.max_seq_length)
        enc.encode(texts[:8])
        holder = {}
        rates["embed"] = len(texts) / _timed(lambda: holder.update(v=enc.encode(texts)))
        vectors = l2_normalise(holder["v"])
    if "kcenter" in stages and vectors is not None and len(vectors) > 2:
        from selectray.kcenter import greedy_k_center

        kk = max(1, min(stages["kcenter"]["k"], len(vectors) // 2))
        rates["kcenter"] = len(vectors) * kk / _timed(lambda: greedy_k_center(vectors, kk))
    if "score" in stages:
        secs = 0.0
        for spec in cfg.selectit.models:
            secs += stages["score"]["models"][model_tag(spec)]["pairs_to_score"] / _score_rate(cfg.selectit, spec, scan.sample)
        rates["score"] = stages["score"]["pairs_to_score"] / secs if secs else math.inf
    if "pick" in stages:
        rates["pick"] = _pick_rate(cfg.selectllm, scan.sample, stages["pick"]["candidates_per_request"])
    return rates


def _score_rate(sit, spec, sample) -> float:
    from selectray.backends import backend_kwargs
    from selectray.stages.scorer import SelectITScorer

    kw = backend_kwargs(spec)
    options = {k: kw.pop(k) for k in list(kw) if k not in ("batch_size", "dtype", "max_length")}
    scorer = SelectITScorer(model=spec.name, backend=spec.backend, prompts=sit.prompts, layout=sit.layout,
                            too_long=sit.too_long, backend_options=options, **kw)
    rows = sample[: max(2 * spec.batch_size, 8)]
    batch = {"id": np.arange(len(rows)), "instruction": [r[0] for r in rows], "input": [r[1] for r in rows],
             "output": [r[2] for r in rows]}
    scorer({k: v[:1] for k, v in batch.items()})
    return len(rows) * len(scorer.prompts) / _timed(lambda: scorer(batch))


def _pick_rate(sl, sample, shown: int) -> float:
    from selectray.backends import backend_kwargs, make_backend
    from selectray.prompts import completion_suffix, selection_prompt

    backend = make_backend(sl.model.backend, sl.model.name, **backend_kwargs(sl.model))
    groups = [[(i, x or None) for i, x, _ in sample[g * shown:(g + 1) * shown]] for g in range(3)]
    prompts = [selection_prompt(g, min(sl.picks, len(g))) for g in groups if g]
    if backend.has_chat_template:
        prompts = [backend.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    else:
        prompts = [p + completion_suffix(sl.picks) for p in prompts]
    stop = ["]"] if sl.picks == 1 else None
    backend.complete(prompts[:1], max_tokens=sl.max_tokens, temperature=0.0, stop=stop)
    return len(prompts) / _timed(lambda: backend.complete(prompts, max_tokens=sl.max_tokens, temperature=0.0, stop=stop))
