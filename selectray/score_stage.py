"""SelectIT score stage: rating probabilities for every (row, prompt, model), cached in OUT/scores/.

The cache key of an entry is (row content hash, prompt text hash, model key), where the
model key covers the model's fingerprint and every backend setting that changes the
probabilities (backend, layout, context policy). A run looks every pair up first and
sends only the missing ones through the model's Ray Data actor pool, so a re-run costs
nothing, an edited prompt recomputes that prompt only, and a swapped model only that
model. Each run adds a sealed part folder per model; unsealed parts (a crashed run)
are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectray.checkpoint import fingerprint
from selectray.config import ModelSpec, SelectITConfig
from selectray.io import POS, Rows

PROBS = [f"p{i}" for i in range(1, 6)]
SEALED = "_SEALED"


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def model_key(spec: ModelSpec, model_fp: str, cfg: SelectITConfig) -> str:
    """Everything about a model run that changes its probabilities (batch sizes and concurrency do not)."""
    return fingerprint("selectit", model_fp, spec.backend, cfg.layout, cfg.too_long)


@dataclass
class ModelScores:
    """One model's probabilities for the current rows, indexed [pos, prompt]."""

    name: str
    params: float
    probs: np.ndarray  # (N, K, 5)
    other: np.ndarray  # (N, K)
    truncated: np.ndarray  # (N,) bool
    too_long: np.ndarray  # (N,) bool: not scored, the row does not fit this model
    computed_pairs: int  # (row, prompt) pairs this run sent through the model


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*") if (p / SEALED).exists()) if folder.exists() else []


def load_cached(folder: Path) -> pa.Table | None:
    """Every sealed entry of one model key; None when there are none."""
    tables = [pq.read_table(p) for p in _parts(folder)]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def lookup(rows: Rows, prompt_hashes: list[str], cached: pa.Table | None) -> tuple[np.ndarray, ...]:
    """(probs (N,K,5), other (N,K), truncated (N,K), too_long (N,K), found (N,K)) from cached entries."""
    n, k = rows.num_usable, len(prompt_hashes)
    probs = np.full((n, k, 5), np.nan)
    other = np.full((n, k), np.nan)
    truncated = np.zeros((n, k), dtype=bool)
    too_long = np.zeros((n, k), dtype=bool)
    found = np.zeros((n, k), dtype=bool)
    if cached is None:
        return probs, other, truncated, too_long, found
    want = pa.table({
        "row_hash": pa.array(np.repeat(rows.hashes, k).astype(str)),
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


def _only_positions(table: pa.Table, positions: np.ndarray) -> pa.Table:
    return table.filter(pc.is_in(table[POS], pa.array(positions)))


class CachingScorer:
    """`map_batches` callable: the SelectIT scorer for a subset of the prompts, output tagged
    with the cache key columns (`row_hash` is the row's content hash, read as the id column)."""

    def __init__(self, prompt_indices: list[int], prompt_hashes: list[str], key: str, params: float | None,
                 threads: int | None = None, pool_size: int = 1, **scorer):
        from selectray.backends import use_cpu_threads
        from selectray.scoring import SelectITScorer

        use_cpu_threads(threads, pool_size)
        self.scorer = SelectITScorer(id_column="_hash", **scorer)
        self.prompt_indices = np.asarray(prompt_indices, dtype=np.int32)
        self.prompt_hashes = np.asarray(prompt_hashes, dtype=object)
        self.key = key
        self.params = float(params or self.scorer.params)

    def __call__(self, batch: dict) -> dict:
        out = self.scorer(batch)
        n = len(out["id"])
        out["row_hash"] = out.pop("id")
        out["prompt_index"] = self.prompt_indices[out["prompt_index"]]
        out["prompt_hash"] = self.prompt_hashes[out["prompt_index"]]
        out["model_key"] = np.full(n, self.key, dtype=object)
        out["params"] = np.full(n, self.params)
        return out


def score_model(rows: Rows, spec: ModelSpec, cfg: SelectITConfig, prompts: list[str], out: Path, *, cuda: bool,
                cached_only: bool = False) -> ModelScores:
    """Probabilities of one model for every usable row: cache first, the model for the rest.

    `cached_only` (rescore): no model runs; a pair missing from the cache is an error.
    """
    import ray
    import ray.data

    from selectray.models import model_fingerprint

    key = model_key(spec, model_fingerprint(spec.name), cfg)
    folder = out / "scores" / key
    prompt_hashes = [text_hash(p) for p in prompts]
    probs, other, truncated, too_long, found = lookup(rows, prompt_hashes, load_cached(folder))
    work = missing_work(found)
    if cached_only and work:
        from selectray.errors import InputError

        missing = sum(len(p) * len(k) for k, p in work.items())
        raise InputError(f"rescore: {missing} (row, prompt) pairs of model '{spec.name}' are not in {folder}; run `selectray run` first")
    computed = 0
    cols = rows.columns
    available = set(rows.dataset().columns())
    keep = [c for c in ("_hash", POS, cols.instruction, cols.input, cols.output) if c and c in available]
    for subset, positions in work.items():
        part = folder / f"part-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{len(subset)}-{positions[0]}"
        ds = rows.dataset().select_columns(keep)
        ds = ds.map_batches(_only_positions, batch_format="pyarrow", fn_kwargs={"positions": positions})
        # Small blocks, so the progress bar advances every few batches rather than once
        # per input block (a large file's block can take hours to score on a CPU).
        ds = ds.repartition(target_num_rows_per_block=4 * max(spec.batch_size, 16))
        ds = ds.map_batches(
            CachingScorer,
            fn_constructor_kwargs={
                "prompt_indices": list(subset), "prompt_hashes": prompt_hashes, "key": key, "params": spec.params,
                "threads": spec.threads, "pool_size": spec.concurrency[1],
                "model": spec.name, "backend": spec.backend, "batch_size": spec.batch_size,
                "prompts": [prompts[i] for i in subset], "layout": cfg.layout, "too_long": cfg.too_long,
                "instruction_column": cols.instruction, "input_column": cols.input if cols.input in available else None,
                "output_column": cols.output,
            },
            compute=ray.data.ActorPoolStrategy(min_size=spec.concurrency[0], max_size=spec.concurrency[1]),
            batch_size=max(spec.batch_size, 16),
            num_gpus=spec.num_gpus if spec.num_gpus is not None else (1 if cuda else 0),
        )
        ds.write_parquet(str(part))
        (part / SEALED).write_text(json.dumps({"model": spec.name, "prompts": list(subset), "rows": len(positions)}))
        computed += len(positions) * len(subset)
    if work:
        probs, other, truncated, too_long, found = lookup(rows, prompt_hashes, load_cached(folder))
    assert found.all(), "every (row, prompt) pair must be scored or cached"
    params = spec.params or float(load_cached(folder)["params"][0].as_py())
    return ModelScores(spec.name, params, probs, other, truncated.any(axis=1), too_long.any(axis=1), computed)
