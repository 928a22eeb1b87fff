"""The interface every inference backend implements, and the token-level logic they share.

Two implementations share one interface (`RaterBackend`): ``transformers`` (CPU or CUDA,
in this process) and ``vllm`` (GPU, extra ``selectray[gpu]``). The same objects serve the
SelectIT score stage and the Ray Serve rater app:

* ``rating_probs(prompts) -> RatingProbs``: for each prompt the next-token probabilities
  of the ratings "1".."5" (raw, over the full vocabulary) and the mass outside them;
  ``rating_probs_ids(split)`` the same for prompts already tokenized (``encode_batch``);
* ``complete(prompts, max_tokens, temperature, stop, logprobs) -> list[Completion]``;
* ``count_tokens``, ``context_length``, ``apply_chat_template``, ``has_chat_template``.

A prompt is a string or a ``(prefix, suffix)`` pair. The model reads the token ids of the
prefix (with the model's BOS token first, when it uses one) followed by those of the suffix,
each tokenized on its own; prompts with the same non-empty prefix share its computation
(KV reuse in transformers, prefix caching in vLLM). Both backends build identical token ids.
Many prompts are tokenized in one batched tokenizer call (`encode_batch`, `encode_texts`),
each distinct text once; the ids are exactly those of one ``encode`` per text.
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

    def encode_texts(self, texts: Sequence[str], offsets: bool = False) -> list:
        """Token ids of each text (no special tokens) in one batched call of a fast tokenizer:
        exactly ``tokenizer.encode(text, add_special_tokens=False)`` per text. With
        ``offsets``: (ids, character (start, end) of each token) per text (fast tokenizers only)."""
        if not texts:
            return []
        tok = self.tokenizer
        if not getattr(tok, "is_fast", False):
            if offsets:
                raise ConfigError(f"token offsets need a fast tokenizer; {type(tok).__name__} is not one")
            return [list(tok.encode(t, add_special_tokens=False)) for t in texts]
        rust = _plain_rust_tokenizer(tok)
        if rust is not None:
            # The Rust tokenizer's batch call, without transformers' per-text conversion to a dict
            # and, for ids only, without computing offsets (together ~30 % of a batch's tokenization).
            if offsets:
                return [(e.ids, e.offsets) for e in rust.encode_batch(list(texts), add_special_tokens=False)]
            return [e.ids for e in rust.encode_batch_fast(list(texts), add_special_tokens=False)]
        enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=offsets)
        return list(zip(enc["input_ids"], enc["offset_mapping"], strict=True)) if offsets else enc["input_ids"]

    def encode_batch(self, prompts: Sequence[Prompt]) -> list[tuple[list[int], list[int]]]:
        """`encode_split` of every prompt, each distinct text tokenized once, in one batched call."""
        pairs = [("", p) if isinstance(p, str) else p for p in prompts]
        texts = list(dict.fromkeys(t for pair in pairs for t in pair if t))
        ids = dict(zip(texts, self.encode_texts(texts), strict=True))
        ids[""] = []
        bos = [self.tokenizer.bos_token_id] if self.add_bos else []
        return [(bos + ids[pre], ids[suf]) if pre else ([], bos + ids[suf]) for pre, suf in pairs]

    def count_tokens(self, prompts: Sequence[Prompt]) -> list[int]:
        """Number of tokens the model reads for each prompt (BOS included)."""
        return [len(head) + len(tail) for head, tail in self.encode_batch(prompts)]

    def _check_lengths(self, seqs: Sequence[Sequence[int]]) -> None:
        too_long = [len(s) for s in seqs if len(s) > self.context_length]
        if too_long:
            raise ValueError(
                f"{len(too_long)} prompt(s) exceed the context length {self.context_length} "
                f"(longest {max(too_long)} tokens); truncate them first"
            )

    def rating_probs(self, prompts: Sequence[Prompt]) -> RatingProbs:
        """Raw next-token probabilities of "1".."5" after each prompt (see the module docstring)."""
        return self.rating_probs_ids(self.encode_batch(prompts))

    def rating_probs_ids(self, split: Sequence[tuple[Sequence[int], Sequence[int]]]) -> RatingProbs:
        """`rating_probs` of prompts given as token ids: (prefix ids with BOS, suffix ids) each,
        as `encode_split` and `encode_batch` build them (a prompt without a shared prefix has
        an empty prefix part and BOS first in its suffix part)."""
        raise NotImplementedError

    def complete(self, prompts, max_tokens=16, temperature=0.0, stop=None, logprobs=None, seed=None) -> list[Completion]:
        raise NotImplementedError


def _plain_rust_tokenizer(tok):
    """The fast tokenizer's Rust object when calling it directly gives `tok.encode`'s ids: no
    truncation or padding set on it, special tokens read as transformers reads them."""
    rust = getattr(tok, "backend_tokenizer", None)
    if rust is None or not hasattr(rust, "encode_batch_fast"):
        return None
    if rust.truncation is not None or rust.padding is not None:
        return None
    if bool(rust.encode_special_tokens) != bool(getattr(tok, "split_special_tokens", False)):
        return None
    return rust


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string (OpenAI semantics: the stop is not returned)."""
    cut = min((i for i in (text.find(s) for s in stop or ()) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
