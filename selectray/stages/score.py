"""SelectIT score stage: rating probabilities for every (row, prompt, model), cached in OUT/scores/.

Each model has a checkpoint folder `scores/<model key>/` (selectray.checkpoint) whose
key covers the model's fingerprint and every setting that changes its probabilities
(backend, layout, context policy). Its parts hold entries keyed by (row content hash,
prompt text hash), and they accumulate across runs: a run looks every pair up first
and sends only the missing ones through the model's Ray Data actor pool, where each
batch is written as one recorded part. So a re-run costs nothing, an edited prompt
recomputes that prompt only, a swapped model only that model, and a run cut short
resumes from its recorded parts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from selectray.checkpoint import Checkpoint, fingerprint
from selectray.columns import HASH, POS
from selectray.errors import InputError
from selectray.storage import Location

PROBS = [f"p{i}" for i in range(1, 6)]


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# Bump when what a cached entry means changes (its keys, the prompt template), so that old
# caches land in other folders and are recomputed rather than misread. 3: over-long responses
# are cut at one of their own token ends (stages/scorer.py), no longer at any character.
CACHE_VERSION = 3


def model_key(spec, model_fp: str, cfg, device: str) -> str:
    """Everything about a model run that changes its probabilities: the model (its fingerprint
    covers the weights, the tokenizer and a hub commit), backend, device, dtype, context
    limit, quantization, prompt layout and context policy (batch sizes and pool sizes do not)."""
    from selectray.prompts import TEMPLATE_VERSION

    dtype = spec.dtype if spec.dtype != "auto" else ("auto" if spec.backend == "vllm" else
                                                      "bfloat16" if device == "cuda" else "float32")
    return fingerprint("selectit", CACHE_VERSION, TEMPLATE_VERSION, model_fp, spec.backend, device, dtype,
                       spec.max_model_len, spec.quantization, cfg.layout, cfg.too_long)


@dataclass
class ModelScores:
    """One model's probabilities for the current rows, indexed [pos, prompt]."""

    name: str
    params: float
    weight: float  # model-level weight before normalisation: the entry's `weight`, else `params`
    probs: np.ndarray  # (N, K, 5)
    other: np.ndarray  # (N, K)
    truncated: np.ndarray  # (N,) bool
    too_long: np.ndarray  # (N,) bool: not scored, the row does not fit this model
    computed_pairs: int  # (row, prompt) pairs this run sent through the model
    reused_parts: int = 0  # recorded parts of earlier (perhaps interrupted) runs that this run read


@dataclass
class Scores:
    """The score stage's result: every model's probabilities and the SelectIT levels (computed once)."""

    models: list[ModelScores]
    levels: dict[str, np.ndarray] = field(default_factory=dict)  # output columns, indexed by pos

    @property
    def too_long(self) -> np.ndarray:
        """Rows that do not fit some model's context (rejected as too_long)."""
        return np.logical_or.reduce([m.too_long for m in self.models])


def load_cached(ck: Checkpoint) -> pa.Table | None:
    """Every recorded entry of one model key; None when there are none."""
    tables = [t for t in ((ck.folder / p.file).read_parquet() for p in ck.parts()) if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def lookup(pool, prompt_hashes: list[str], cached: pa.Table | None) -> tuple[np.ndarray, ...]:
    """(probs (N,K,5), other (N,K), truncated (N,K), too_long (N,K), found (N,K)) from cached entries."""
    n, k = pool.num_usable, len(prompt_hashes)
    probs = np.full((n, k, 5), np.nan)
    other = np.full((n, k), np.nan)
    truncated = np.zeros((n, k), dtype=bool)
    too_long = np.zeros((n, k), dtype=bool)
    found = np.zeros((n, k), dtype=bool)
    if cached is None:
        return probs, other, truncated, too_long, found
    want = pa.table({
        "row_hash": pool.hashes.take(pa.array(np.repeat(np.arange(n, dtype=np.int64), k))).cast(pa.string()),
        "prompt_hash": pa.array(np.tile(np.asarray(prompt_hashes, dtype=str), n)),
        "_pos": np.repeat(np.arange(n, dtype=np.int64), k),
        "_k": np.tile(np.arange(k, dtype=np.int64), n),
    })
    keep = ["row_hash", "prompt_hash", *PROBS, "p_other", "truncated", "too_long"]
    hit = want.join(cached.select(keep), keys=["row_hash", "prompt_hash"], join_type="inner")
    pos, kk = hit["_pos"].to_numpy(), hit["_k"].to_numpy()
    probs[pos, kk] = np.stack([hit[c].to_numpy(zero_copy_only=False) for c in PROBS], axis=1)
    other[pos, kk] = hit["p_other"].to_numpy(zero_copy_only=False)
    truncated[pos, kk] = hit["truncated"].to_numpy(zero_copy_only=False)
    too_long[pos, kk] = hit["too_long"].to_numpy(zero_copy_only=False)
    found[pos, kk] = True
    return probs, other, truncated, too_long, found


def missing_work(found: np.ndarray) -> dict[tuple[int, ...], np.ndarray]:
    """Rows grouped by the prompts they still need: {prompt indices: positions}."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for pos in np.flatnonzero(~found.all(axis=1)):
        groups.setdefault(tuple(np.flatnonzero(~found[pos]).tolist()), []).append(int(pos))
    return {key: np.asarray(v, dtype=np.int64) for key, v in groups.items()}


class CachingScorer:
    """`map_batches` callable: the SelectIT scorer for a subset of the prompts; each batch's
    entries, tagged with their cache keys, are written as one recorded part of the cache."""

    def __init__(self, checkpoint: Checkpoint, prompt_indices: list[int], prompt_hashes: list[str],
                 params: float | None, threads: int | None = None, pool_size: int = 1, **scorer):
        from selectray.resources import use_cpu_threads
        from selectray.stages.scorer import SelectITScorer

        use_cpu_threads(threads, pool_size)
        self.scorer = SelectITScorer(id_column=HASH, **scorer)
        self.checkpoint = checkpoint
        self.prompt_indices = np.asarray(prompt_indices, dtype=np.int32)
        self.prompt_hashes = np.asarray(prompt_hashes, dtype=object)
        self.params = float(params or self.scorer.params)

    def __call__(self, batch: dict) -> dict:
        out = self.scorer(batch)
        n = len(out["id"])
        out["row_hash"] = out.pop("id")
        out["prompt_index"] = self.prompt_indices[out["prompt_index"]]
        out["prompt_hash"] = self.prompt_hashes[out["prompt_index"]]
        out["model_key"] = np.full(n, self.checkpoint.key, dtype=object)
        out["params"] = np.full(n, self.params)
        table = pa.table(out)
        # Named by its content: a retried batch rewrites the same part.
        digest = hashlib.blake2b("\n".join(map(str, out["row_hash"])).encode(), digest_size=10)
        digest.update(",".join(map(str, self.prompt_indices)).encode())
        self.checkpoint.write_part(table, f"part-{digest.hexdigest()}")
        return {"pairs": np.asarray([n])}


def score_model(pool, spec, cfg, prompts: list[str], out: Location, *, gpus: bool, cached_only: bool = False) -> ModelScores:
    """Probabilities of one model for every usable row: cache first, the model for the rest.

    `cached_only` (rescore): no model runs; a pair missing from the cache is an error.
    """
    from selectray.models import model_fingerprint
    from selectray.resources import map_batches_options

    device = "cuda" if spec.resources().gpus(gpus) > 0 else "cpu"
    key = model_key(spec, model_fingerprint(spec.name), cfg, device)
    ck = Checkpoint(out / "scores" / key, key, model=spec.name)
    prompt_hashes = [text_hash(p) for p in prompts]
    reused_parts = len(ck.parts())
    cached = load_cached(ck)
    probs, other, truncated, too_long, found = lookup(pool, prompt_hashes, cached)
    work = missing_work(found)
    if cached_only and work:
        missing = sum(len(p) * len(k) for k, p in work.items())
        raise InputError(f"rescore: {missing} (row, prompt) pairs of model '{spec.name}' are not in {ck.folder}; "
                         "run `selectray run` first")
    computed = 0
    cols = pool.columns
    available = set(pool.column_names())
    keep = [c for c in (HASH, POS, cols.instruction, cols.input, cols.output) if c and c in available]
    batch_rows = max(spec.batch_size, 16)
    for subset, positions in work.items():
        ds = pool.dataset(keep, positions if len(positions) < pool.num_usable else None)
        # Small blocks, so the progress bar advances every few batches rather than once
        # per input block (a large file's block can take hours to score on a CPU).
        ds = ds.repartition(target_num_rows_per_block=4 * batch_rows)
        ds = ds.map_batches(
            CachingScorer,
            fn_constructor_kwargs={
                "checkpoint": ck, "prompt_indices": list(subset), "prompt_hashes": prompt_hashes, "params": spec.params,
                "threads": spec.threads, "pool_size": spec.concurrency[1],
                "model": spec.name, "backend": spec.backend, **_scorer_backend_args(spec),
                "prompts": [prompts[i] for i in subset], "layout": cfg.layout, "too_long": cfg.too_long,
                "instruction_column": cols.instruction, "input_column": cols.input if cols.input in available else None,
                "output_column": cols.output,
            },
            batch_size=batch_rows,
            **map_batches_options(spec.resources(), gpus),
        )
        for _ in ds.iter_batches(batch_size=None):
            pass
        computed += len(positions) * len(subset)
    cached = load_cached(ck) if work else cached
    if work:
        probs, other, truncated, too_long, found = lookup(pool, prompt_hashes, cached)
    if not found.all():
        raise RuntimeError(f"model '{spec.name}': {int((~found).sum())} (row, prompt) pairs are neither scored nor cached")
    ck.seal(input=pool.fingerprint, prompts=prompt_hashes)
    params = spec.params or float(cached["params"][0].as_py())
    return ModelScores(spec.name, params, spec.weight or params, probs, other, truncated.any(axis=1),
                       too_long.any(axis=1), computed, reused_parts)


def _scorer_backend_args(spec) -> dict:
    from selectray.backends import backend_kwargs

    kw = backend_kwargs(spec)
    options = {k: kw.pop(k) for k in list(kw) if k not in ("batch_size", "dtype", "max_length")}
    return {**kw, "backend_options": options}


def score_stage(pool, cfg, out: Location, *, gpus: bool, cached_only: bool = False) -> Scores:
    """Every rater model's probabilities (`cfg`: the `selectit` section) and the SelectIT levels."""
    from selectray.prompts import check_rating_prompts
    from selectray.scoring import selectit_levels

    prompts = list(check_rating_prompts(cfg.prompts))
    models = [score_model(pool, m, cfg, prompts, out, gpus=gpus, cached_only=cached_only) for m in cfg.models]
    levels = selectit_levels([m.probs for m in models], [m.name for m in models], [m.weight for m in models],
                             cfg.alpha, cfg.normalization)
    return Scores(models, levels)


class ScoreStage:
    """The score stage as a method declares it: fills `ctx.scores`, rejects rows too long for a rater."""

    name = "score"

    def __call__(self, ctx) -> str:
        ctx.scores = score_stage(ctx.pool, ctx.cfg.selectit, ctx.out, gpus=ctx.gpus, cached_only=ctx.rescore)
        ctx.rejects.add(np.flatnonzero(ctx.scores.too_long), "too_long")
        return ", ".join(f"{m.name}: {m.computed_pairs} pairs scored" for m in ctx.scores.models) + ","
