"""The plan's counting: one columnar pass over the input as the read stage validates it, tokens of
a seeded sample with each model's tokenizer, and what an existing output folder already holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectray.columns import HASH, ID, REJECT
from selectray.errors import InputError
from selectray.storage import Location

SAMPLE_ROWS = 256  # rows whose text is tokenized


@dataclass
class Scan:
    """The input as the read stage will see it: usable ids and hashes in `pos` order (Arrow strings,
    as `stages.read.Pool` holds them), the rejects by reason, a seeded text sample."""

    num_input: int
    ids: pa.Array
    hashes: pa.Array
    rejected: dict[str, int]
    sample: list[tuple[str, str, str]] = field(default_factory=list)  # (instruction, input, output)
    seconds: float = 0.0

    @property
    def num_usable(self) -> int:
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        """The read stage's input fingerprint (of the usable rows' ids and hashes, in order)."""
        from selectray.stages.read import pool_fingerprint

        return pool_fingerprint(self.ids, self.hashes)


def scan_input(cfg, need_output: bool, sample_rows: int = SAMPLE_ROWS) -> Scan:
    """Validate every input row as the read stage does (same order: Parquet files, then JSONL)."""
    from selectray.stages.read import duplicate_rows
    from selectray.stages.read_files import plan_parts, read_part, resolve_columns, resolve_inputs
    from selectray.stages.selection import seeded_keys
    from selectray.stages.validate import validate_table

    start = time.perf_counter()
    files = resolve_inputs(cfg.input, cfg.read.format)
    cols = resolve_columns(cfg.columns, files)
    ids, hashes, reasons = [], [], []
    keys = np.empty(0, np.uint64)
    sample: list[tuple[str, str, str]] = []
    for part in plan_parts(files):
        try:
            t = validate_table(read_part(part, cols, [*cols.text, *([cols.id] if cols.id else [])]), cols, max_chars=cfg.read.max_chars,
                               need_output=need_output)
        except TypeError as e:
            raise InputError(f"{part.path}: {e}") from None
        ids.append(t[ID].combine_chunks().cast(pa.large_string()))
        hashes.append(t[HASH].combine_chunks().cast(pa.large_string()))
        reasons.append(t[REJECT].combine_chunks().cast(pa.string()))
        ok = np.flatnonzero(pc.is_null(reasons[-1]).to_numpy(zero_copy_only=False))
        k = seeded_keys(ids[-1].take(pa.array(ok, pa.int64())), cfg.seed)
        if len(keys) >= sample_rows:  # only rows that can still enter the sample need their text
            ok, k = ok[k < keys.max()], k[k < keys.max()]
        sub = t.take(pa.array(ok, pa.int64()))
        texts = [sub[c].to_pylist() if c and c in sub.column_names else [None] * sub.num_rows
                 for c in (cols.instruction, cols.input, cols.output)]
        keys = np.concatenate([keys, k])
        sample += [tuple(v or "" for v in row) for row in zip(*texts)]
        keep = np.argsort(keys, kind="stable")[:sample_rows]
        keys, sample = keys[keep], [sample[j] for j in keep]
    ids = pa.concat_arrays(ids) if ids else pa.array([], pa.large_string())
    hashes = pa.concat_arrays(hashes) if hashes else pa.array([], pa.large_string())
    reasons = pa.concat_arrays(reasons) if reasons else pa.array([], pa.string())
    ok = pc.is_null(reasons).to_numpy(zero_copy_only=False).copy()
    dup = duplicate_rows(ids, ok)
    ok[dup] = False
    reasons = reasons.to_numpy(zero_copy_only=False).copy()
    reasons[dup] = "duplicate_id"
    values, counts = np.unique(reasons[~ok].astype(str), return_counts=True)
    keep = pa.array(ok)
    return Scan(len(ids), ids.filter(keep), hashes.filter(keep), dict(zip(values.tolist(), counts.tolist())),
                sample, time.perf_counter() - start)


# ---------------------------------------------------------------- tokens

def _tokenizer(name: str):
    """(tokenizer, context length, adds BOS) of a model spec, without loading the weights when a
    converted copy or a directory exists (a GGUF model is converted once, as a run would)."""
    from transformers import AutoConfig

    from selectray.models import (
        context_length_of,
        load_tokenizer,
        prepare_model_dir,
        tokenizer_adds_bos,
    )

    _, _, path, _ = prepare_model_dir(name)
    tok = load_tokenizer(path)
    return tok, context_length_of(AutoConfig.from_pretrained(str(path), local_files_only=True)), tokenizer_adds_bos(tok)


def rating_tokens(spec, sit, sample) -> dict:
    """Tokens a model reads per (row, rating prompt), from the sample (capped at its context)."""
    from selectray.prompts import (
        adapt_to_tokens,
        build_rating_prompt,
        check_rating_prompts,
        find_rating_tokens,
    )

    tok, context, bos = _tokenizer(spec.name)
    context = min(context, getattr(spec, "max_model_len", None) or context)
    rating = find_rating_tokens(tok)
    enc = tok.encode
    sizes, shared = [], []
    for ins, inp, out in sample:
        for rp in check_rating_prompts(sit.prompts):
            prefix, suffix = build_rating_prompt(rp, ins, inp, out, sit.layout)
            head = int(bos) + (len(enc(prefix, add_special_tokens=False)) if prefix else 0)
            sizes.append(head + len(enc(adapt_to_tokens(suffix, rating), add_special_tokens=False)))
            shared.append(head if prefix else 0)
    sizes = np.asarray(sizes, float)
    return {"tokens_per_pair": float(np.minimum(sizes, context).mean()) if len(sizes) else None,
            "shared_prefix_per_pair": float(np.mean(shared)) if shared else None,
            "context_length": int(context), "over_context_share": float((sizes > context).mean()) if len(sizes) else None}


def request_tokens(sl, sample, candidates: int) -> dict:
    """Prompt tokens of one rater request, from groups of sampled rows."""
    from selectray.prompts import completion_suffix, selection_prompt

    tok, _, bos = _tokenizer(sl.model.name)
    chat = getattr(tok, "chat_template", None) is not None
    sizes = []
    for g in range(max(1, len(sample) // max(1, candidates))):
        group = [(ins, inp or None) for ins, inp, _ in sample[g * candidates:(g + 1) * candidates]]
        if not group:
            break
        prompt = selection_prompt(group, min(sl.picks, len(group)))
        if chat:
            prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            sizes.append(len(enc_plain(tok, prompt)))
        else:
            sizes.append(int(bos) + len(enc_plain(tok, prompt + completion_suffix(sl.picks))))
    return {"prompt_tokens_per_request": float(np.mean(sizes)) if sizes else None, "chat_template": chat}


def enc_plain(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------- cache hits in an existing output folder

def embed_cached(out: Location, scan: Scan, ecfg) -> int:
    """Rows whose vectors OUT/embeddings/ holds for this input and these embedder settings."""
    try:
        m = (out / "embeddings" / "_manifest.json").read_json()
    except (OSError, ValueError):
        return 0
    same = m.get("input") == scan.fingerprint and all(
        m.get(k) == getattr(ecfg, k) for k in ("model", "dtype", "max_seq_length", "hash_dim") if k in m)
    return int(m.get("rows", 0)) if same else 0


def kcenter_cached(out: Location, k: int, cfg, seeds: int) -> bool:
    """Whether OUT/kcenter/ holds this k, mode and number of seeds (over reusable embeddings)."""
    try:
        m = (out / "kcenter" / "_manifest.json").read_json()
    except (OSError, ValueError):
        return False
    return m.get("k") == k and m.get("mode") == cfg.kcenter.mode and m.get("seeds") == seeds


def score_cached(out: Location, scan: Scan, spec, sit, gpus: bool) -> int:
    """(row, prompt) pairs of this model the scores/ cache already holds for these rows and prompts."""
    from types import SimpleNamespace

    from selectray.checkpoint import Checkpoint
    from selectray.models import model_fingerprint
    from selectray.prompts import check_rating_prompts
    from selectray.stages.score import load_cached, lookup, model_key, text_hash

    device = "cuda" if spec.resources().gpus(gpus) > 0 else "cpu"
    key = model_key(spec, model_fingerprint(spec.name), sit, device)
    cached = load_cached(Checkpoint(out / "scores" / key, key))
    if cached is None:
        return 0
    pool = SimpleNamespace(num_usable=scan.num_usable, hashes=scan.hashes)
    found = lookup(pool, [text_hash(p) for p in check_rating_prompts(sit.prompts)], cached)[-1]
    return int(found.sum())
