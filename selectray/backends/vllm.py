"""The vLLM backend (GPU; ``pip install 'selectray[gpu]'``, vllm 0.33.0).

Everything selectray asks of vLLM is built by the pure functions below (`engine_args`,
`rating_sampling`, `completion_sampling`, `token_prompts`), so a wrong argument fails a
CPU test here instead of a GPU cluster. The engine runs in this process, one per Ray Data
actor or Serve replica (docs/methods.md, "Backends", says why not Ray Data LLM's
processor).

Prompts are sent as token ids built by selectray's own tokenizer (the same ids as the
transformers backend, BOS included). Rating probabilities use ``max_tokens=1`` with
``logprob_token_ids=<the five ids>``: vLLM returns the log-probabilities of exactly those
tokens at the first generated position, computed from the raw logits over the full
vocabulary (``logprobs_mode="raw_logprobs"``, vLLM's default), so they match the
transformers backend. ``prompt_logprobs`` is never used (it turns off prefix caching);
prefix caching is on, so the K prompts of a row in the ``sample-first`` layout prefill
their shared prefix once. vllm is imported when the backend is created, never at import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from selectray.backends.base import Completion, RaterBackend, RatingProbs, truncate_at_stop
from selectray.errors import require
from selectray.models import (
    context_length_of,
    count_parameters_on_disk,
    load_tokenizer,
    prepare_model_dir,
    tokenizer_adds_bos,
)

VLLM_VERSION = "0.33.0"  # the one pinned in pyproject.toml's gpu extra


def engine_args(path: str, context_length: int, *, dtype: str | None = "auto", gpu_memory_utilization: float = 0.85,
                enable_prefix_caching: bool = True, tensor_parallel_size: int = 1, quantization: str | None = None,
                seed: int = 0, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for a model directory.

    Tensor parallelism stays inside the actor or replica, which reserved that many GPUs
    of one node: vLLM's multiprocessing executor, not its Ray executor (which would need
    a placement group of its own inside Ray Data's or Serve's).
    """
    args: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "dtype": dtype or "auto",
        "max_model_len": int(context_length),
        "gpu_memory_utilization": float(gpu_memory_utilization),
        "enable_prefix_caching": bool(enable_prefix_caching),
        "tensor_parallel_size": int(tensor_parallel_size),
        "seed": int(seed),
    }
    if tensor_parallel_size > 1:
        args["distributed_executor_backend"] = "mp"
    if quantization:
        args["quantization"] = quantization
    return {**args, **extra}


def rating_sampling(rating_ids: Sequence[int]) -> dict[str, Any]:
    """`SamplingParams` of a rating request: one greedy token and the log-probabilities of the rating ids."""
    return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": [int(t) for t in rating_ids], "detokenize": False}


def completion_sampling(max_tokens: int, temperature: float, stop, logprobs: int | None, seed: int | None) -> dict[str, Any]:
    """`SamplingParams` of a completion (the rater app's requests)."""
    return {"max_tokens": int(max_tokens), "temperature": float(temperature), "stop": list(stop) if stop else None,
            "logprobs": logprobs, "seed": seed}


def token_prompts(seqs: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    """vLLM `TokensPrompt`s (plain dicts): the ids selectray built, never re-tokenized by vLLM."""
    return [{"prompt_token_ids": [int(t) for t in s]} for s in seqs]


def rating_from_logprobs(step: dict, rating_ids: Sequence[int]) -> list[float]:
    """P("1").."P("5") from the first generated position's {token id: Logprob}."""
    return [math.exp(step[t].logprob) for t in rating_ids]


class VLLMBackend(RaterBackend):
    """Rater on a vLLM engine in this process.

    ``dtype``: vLLM's dtype ("auto" picks half precision for float32 checkpoints, e.g.
    converted GGUF models; "float32" to compare with the transformers backend exactly).
    ``batch_size`` is accepted for interface parity; vLLM schedules its own batches.
    Other keyword arguments are engine options (see `engine_args`).
    """

    name = "vllm"

    def __init__(self, model: str, *, dtype: str | None = "auto", batch_size: int | None = None,
                 max_length: int | None = None, cache_dir=None, device: str | None = None, **engine_options):
        vllm = require("vllm", "pip install 'selectray[gpu]'")
        from transformers import AutoConfig

        src, self.fingerprint, path, _ = prepare_model_dir(model, cache_dir)
        self.model_name = src.name
        self.path = path
        self.tokenizer = load_tokenizer(path)
        self.add_bos = tokenizer_adds_bos(self.tokenizer)
        self.params = count_parameters_on_disk(path)
        native = context_length_of(AutoConfig.from_pretrained(str(path), local_files_only=True))
        self._context_length = min(native, max_length or native)
        self._init_rating()
        self._sp = vllm.SamplingParams
        self.llm = vllm.LLM(**engine_args(str(path), self._context_length, dtype=dtype, **engine_options))

    def _generate(self, seqs: Sequence[Sequence[int]], params: dict):
        return self.llm.generate(token_prompts(seqs), self._sp(**params), use_tqdm=False)

    def rating_probs_ids(self, split: Sequence[tuple[Sequence[int], Sequence[int]]]) -> RatingProbs:
        """Raw next-token probabilities of "1".."5" after each tokenized prompt (see RaterBackend)."""
        seqs = [[*head, *tail] for head, tail in split]
        self._check_lengths(seqs)
        ids = list(self.rating.ids)
        out = np.empty((len(seqs), 5), dtype=np.float64)
        for r, res in enumerate(self._generate(seqs, rating_sampling(ids))):
            steps = res.outputs[0].logprobs
            if not steps:
                raise RuntimeError(f"vLLM returned no logprobs; it must support SamplingParams.logprob_token_ids (vllm {VLLM_VERSION})")
            out[r] = rating_from_logprobs(steps[0], ids)
        return RatingProbs(out, 1.0 - out.sum(axis=1))

    def complete(self, prompts, max_tokens=16, temperature=0.0, stop=None, logprobs=None, seed=None) -> list[Completion]:
        """Generate a completion per prompt (greedy at temperature 0); see the transformers backend."""
        seqs = [[*head, *tail] for head, tail in self.encode_batch(prompts)]  # = encode(p), one batched call
        self._check_lengths(seqs)
        results = []
        params = completion_sampling(max_tokens, temperature, stop, logprobs, seed)
        for seq, res in zip(seqs, self._generate(seqs, params), strict=True):
            o = res.outputs[0]
            text, _ = truncate_at_stop(o.text, stop)
            token_lp = top = None
            if logprobs is not None and o.logprobs:
                token_lp = [step[t].logprob for t, step in zip(o.token_ids, o.logprobs, strict=False)]
                if logprobs > 0:
                    top = [
                        {(lp.decoded_token or self.tokenizer.decode([t])): lp.logprob for t, lp in step.items()}
                        for step in o.logprobs
                    ]
            reason = "stop" if o.finish_reason == "stop" else "length"
            results.append(Completion(text, token_lp, len(seq), len(o.token_ids), reason, tuple(o.token_ids), top))
        return results
