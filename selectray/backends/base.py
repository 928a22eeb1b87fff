"""The interface every inference backend implements, and the token-level logic they share.

Two implementations share one interface (`RaterBackend`): ``transformers`` (CPU or CUDA,
in this process) and ``vllm`` (GPU, extra ``selectray[gpu]``). The same objects serve the
SelectIT score stage and the Ray Serve rater app:

* ``rating_probs(prompts) -> RatingProbs``: for each prompt the next-token probabilities
  of the ratings "1".."5" (raw, over the full vocabulary) and the mass outside them;
* ``complete(prompts, max_tokens, temperature, stop, logprobs) -> list[Completion]``;
* ``count_tokens``, ``context_length``, ``apply_chat_template``, ``has_chat_template``.

A prompt is a string or a ``(prefix, suffix)`` pair. The model reads the token ids of the
prefix (with the model's BOS token first, when it uses one) followed by those of the suffix,
each tokenized on its own; prompts with the same non-empty prefix share its computation
(KV reuse in transformers, prefix caching in vLLM). Both backends build identical token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from selectray.errors import ConfigError
from selectray.prompts import RatingTokens, find_rating_tokens

BACKENDS = ("transformers", "vllm")
Prompt = str | tuple[str, str]


class RatingProbs(NamedTuple):
    """``probs`` (n, 5) float64: P("1").."P("5"); ``other`` (n,): 1 − their sum."""

    probs: np.ndarray
    other: np.ndarray


class Completion(NamedTuple):
    """One completion. ``token_logprobs``: raw log-probability of each generated token
    (None unless requested); ``top_logprobs``: per token, {token text: logprob} of the k
    most likely tokens (when logprobs=k > 0); ``finish_reason``: "stop" or "length"."""

    text: str
    token_logprobs: list[float] | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "length"
    token_ids: tuple[int, ...] = ()
    top_logprobs: list[dict[str, float]] | None = None


class RaterBackend:
    """Token-level logic shared by the backends; subclasses implement the model calls.

    Subclasses set ``tokenizer``, ``add_bos``, ``model_name``, ``fingerprint``, ``params``,
    ``_context_length`` and call ``_init_rating()``.
    """

    name = "base"
    tokenizer = None
    add_bos = False
    _context_length = 0
    rating: RatingTokens

    def _init_rating(self) -> None:
        # Fails at start-up (not mid-run) for a tokenizer without single-token digits.
        self.rating = find_rating_tokens(self.tokenizer)

    @property
    def context_length(self) -> int:
        """Longest prompt (in tokens, BOS included) the backend accepts."""
        return self._context_length

    @property
    def has_chat_template(self) -> bool:
        return getattr(self.tokenizer, "chat_template", None) is not None

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render chat messages with the model's template (the BOS token is left out: the
        backends add it when encoding)."""
        if not self.has_chat_template:
            raise ConfigError(f"model {self.model_name!r} has no chat template; send plain prompts")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        bos = self.tokenizer.bos_token
        if self.add_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids the model reads for a prompt (see the module docstring)."""
        prefix, suffix = ("", prompt) if isinstance(prompt, str) else prompt
        ids = [self.tokenizer.bos_token_id] if self.add_bos else []
        enc = self.tokenizer.encode
        if prefix:
            ids += enc(prefix, add_special_tokens=False)
        return ids + enc(suffix, add_special_tokens=False)

    def encode_split(self, prompt: Prompt) -> tuple[list[int], list[int]]:
        """(prefix ids with BOS, suffix ids); the prefix part is empty for a plain string."""
        prefix, suffix = ("", prompt) if isinstance(prompt, str) else prompt
        if not prefix:
            return [], self.encode(suffix)
        head = ([self.tokenizer.bos_token_id] if self.add_bos else []) + self.tokenizer.encode(prefix, add_special_tokens=False)
        return head, self.tokenizer.encode(suffix, add_special_tokens=False)

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """Number of tokens the model reads for each prompt (BOS included)."""
        return [len(self.encode(p)) for p in prompts]

    def _check_lengths(self, seqs: Sequence[Sequence[int]]) -> None:
        too_long = [len(s) for s in seqs if len(s) > self.context_length]
        if too_long:
            raise ValueError(
                f"{len(too_long)} prompt(s) exceed the context length {self.context_length} "
                f"(longest {max(too_long)} tokens); truncate them first"
            )

    def rating_probs(self, prompts: Sequence[Prompt]) -> RatingProbs:
        raise NotImplementedError

    def complete(self, prompts, max_tokens=16, temperature=0.0, stop=None, logprobs=None, seed=None) -> list[Completion]:
        raise NotImplementedError


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string (OpenAI semantics: the stop is not returned)."""
    cut = min((i for i in (text.find(s) for s in stop or ()) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
