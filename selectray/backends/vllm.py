"""The vLLM backend (GPU; ``pip install 'selectray[gpu]'``, vllm 0.33).

Prompts are sent as token ids built by selectray's own tokenizer (the same ids as the
transformers backend, BOS included). Rating probabilities use
``SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=<the five ids>)``: vLLM
returns the log-probabilities of exactly those tokens at the first generated position,
computed from the raw logits over the full vocabulary (``logprobs_mode="raw_logprobs"``,
vLLM's default), so they match the transformers backend. ``prompt_logprobs`` is never
used (it turns off prefix caching); prefix caching is on, so the K prompts of a row in the
``sample-first`` layout prefill their shared prefix once.

vllm is imported when the backend is created, never at module import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from selectray.backends.base import Completion, Prompt, RaterBackend, RatingProbs, truncate_at_stop
from selectray.errors import require
from selectray.models import (
    context_length_of,
    count_parameters_on_disk,
    load_tokenizer,
    prepare_model_dir,
    tokenizer_adds_bos,
)


class VLLMBackend(RaterBackend):
    """Rater on a vLLM engine in this process (one GPU by default).

    ``dtype``: vLLM's dtype ("auto" picks half precision for float32 checkpoints, e.g.
    converted GGUF models; "float32" to compare with the transformers backend exactly).
    ``batch_size`` is accepted for interface parity; vLLM schedules its own batches.
    ``engine_options`` go to ``vllm.LLM`` (e.g. tensor_parallel_size).
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str | None = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        gpu_memory_utilization: float = 0.85,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        cache_dir=None,
        device: str | None = None,
        **engine_options,
    ):
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
        self.llm = vllm.LLM(
            model=str(path),
            tokenizer=str(path),
            dtype=dtype or "auto",
            max_model_len=self._context_length,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            **engine_options,
        )

    def _generate(self, seqs: Sequence[Sequence[int]], params):
        # Plain dicts are vLLM's TokensPrompt (a TypedDict): no tokenization by vLLM.
        return self.llm.generate([{"prompt_token_ids": list(s)} for s in seqs], params, use_tqdm=False)

    def rating_probs(self, prompts: Sequence[Prompt]) -> RatingProbs:
        """Raw next-token probabilities of "1".."5" after each prompt (see RaterBackend)."""
        seqs = [self.encode(p) for p in prompts]
        self._check_lengths(seqs)
        ids = list(self.rating.ids)
        params = self._sp(max_tokens=1, temperature=0.0, logprob_token_ids=ids, detokenize=False)
        out = np.empty((len(seqs), 5), dtype=np.float64)
        for r, res in enumerate(self._generate(seqs, params)):
            steps = res.outputs[0].logprobs
            if not steps:
                raise RuntimeError("vLLM returned no logprobs; it must support SamplingParams.logprob_token_ids (vllm>=0.33)")
            first = steps[0]
            out[r] = [math.exp(first[t].logprob) for t in ids]
        return RatingProbs(out, 1.0 - out.sum(axis=1))

    def complete(self, prompts, max_tokens=16, temperature=0.0, stop=None, logprobs=None, seed=None) -> list[Completion]:
        """Generate a completion per prompt (greedy at temperature 0); see the transformers backend."""
        seqs = [self.encode(p) for p in prompts]
        self._check_lengths(seqs)
        params = self._sp(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=list(stop) if stop else None,
            logprobs=logprobs,
            seed=seed,
        )
        results = []
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
