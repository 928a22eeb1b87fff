"""The transformers backend: CPU or CUDA, in this process.

Rating probabilities come from one forward pass per batch of prompts, with

* batches built by token length (longest first, capped by prompt count and by tokens) so
  that padding wastes little;
* only the logits of each prompt's last position computed, not the full vocabulary at every
  position: prompts are left-padded (positions counted from each prompt's first token), so
  every last token sits in the last column and ``logits_to_keep=1`` (with sliding windows,
  the suffixes after a shared prefix stay right-padded and ``logits_to_keep`` lists the
  batch's few distinct last positions);
* prompts sharing a prefix (layout ``sample-first``): the prefix is run once, its KV cache
  is repeated for the prompts, and only the suffixes are run on top of it;
* a batch that runs out of memory split in halves and retried (down to single prompts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
import torch

from selectray.backends.base import Completion, RaterBackend, RatingProbs, truncate_at_stop
from selectray.models import LoadedModel, load_model


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA, or a failed CPU allocation)."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(err, oom_type)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def split_on_oom(fn: Callable[[list], list], items: list) -> list:
    """``fn(items)``, or on out-of-memory the concatenation of ``fn`` on each half (recursively)."""
    try:
        return fn(items)
    except Exception as err:
        if not is_oom(err) or len(items) <= 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mid = len(items) // 2
    return split_on_oom(fn, items[:mid]) + split_on_oom(fn, items[mid:])


def length_batches(lengths: Sequence[int], max_items: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first; each batch has at most
    ``max_items`` entries and ``len(batch) * longest`` at most ``max_tokens`` (or one entry)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) >= max_items or (len(cur) + 1) * lengths[cur[0]] > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


class TransformersBackend(RaterBackend):
    """Rater on a transformers causal LM.

    ``model``: a model spec (see selectray.models) or an already `LoadedModel`.
    ``batch_size``: prompts per forward pass (prompts that share a prefix: prefixes per pass,
    each with all its suffixes); ``max_batch_tokens``: cap on prompts × longest prompt per
    pass (prompts that share a prefix count in full); ``max_length``: cap on the context length.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | LoadedModel,
        *,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        max_length: int | None = None,
        cache_dir=None,
    ):
        lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype, cache_dir=cache_dir)
        self.loaded = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        self.add_bos = lm.add_bos
        self.model_name, self.fingerprint, self.params = lm.name, lm.fingerprint, lm.params
        self.device = next(self.model.parameters()).device
        self._context_length = min(lm.context_length, max_length or lm.context_length)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self._init_rating()
        self._rating_ids = torch.tensor(self.rating.ids, device=self.device)
        tok = self.tokenizer
        self.pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        # Sliding-window layers mask by cache index, so padding between a shared prefix and
        # its suffixes would shift the window: prefixes that reach the window run one at a
        # time (no padding). Conservative: any config with a sliding_window counts.
        window = getattr(self.model.config, "sliding_window", None)
        self._window = window if isinstance(window, int) and window > 0 else None

    # ----- rating probabilities -------------------------------------------------------

    def rating_probs_ids(self, split: Sequence[tuple[Sequence[int], Sequence[int]]]) -> RatingProbs:
        """Raw next-token probabilities of "1".."5" after each tokenized prompt (see RaterBackend)."""
        out = np.empty((len(split), 5), dtype=np.float64)
        split = [(list(h), list(t)) for h, t in split]
        self._check_lengths([h + t for h, t in split])
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (head, _) in enumerate(split):
            if head:
                groups.setdefault(tuple(head), []).append(i)
        shared = [(list(h), idx) for h, idx in groups.items() if len(idx) > 1]
        in_group = {i for _, idx in shared for i in idx}
        singles = [i for i in range(len(split)) if i not in in_group]

        seqs = [split[i][0] + split[i][1] for i in singles]
        for batch in length_batches([len(s) for s in seqs], self.batch_size, self.max_batch_tokens):
            res = split_on_oom(self._last_probs, [seqs[j] for j in batch])
            out[[singles[j] for j in batch]] = np.asarray(res)

        work = [(head, [split[i][1] for i in idx], idx) for head, idx in shared]
        # A pass runs up to batch_size prefixes, then all their suffixes on top of the prefixes'
        # keys and values, repeated per suffix: the token cap counts every prompt in full.
        sizes = [len(h) * len(t) + sum(map(len, t)) for h, t, _ in work]
        for batch in length_batches(sizes, self.batch_size, self.max_batch_tokens):
            items = [work[j] for j in batch]
            if self._window and any(len(h) + max(map(len, t)) > self._window for h, t, _ in items):
                res = [r for it in items for r in self._shared_probs([it])]
            else:
                res = split_on_oom(self._shared_probs, items)
            out[[i for it in items for i in it[2]]] = np.asarray(res)
        return RatingProbs(out, 1.0 - out.sum(axis=1))

    def _pad(self, seqs: Sequence[Sequence[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask), right- or left-padded, filled in one step (a row-major boolean
        assignment keeps each row's order)."""
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        width = int(lengths.max())
        cols = np.arange(width)
        keep = cols >= (width - lengths)[:, None] if left else cols < lengths[:, None]
        ids = np.full(keep.shape, self.pad_id, dtype=np.int64)
        ids[keep] = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(keep.astype(np.int64)).to(self.device)

    def _probs_at(self, logits_out, col: torch.Tensor | None = None) -> list:
        """Rating probabilities from each row's logits at column ``col`` of the kept positions
        (None: the last, where left padding puts every row's last token)."""
        logits = logits_out.logits
        # The last position is a view; a gather copies the rows, which cost as much as the softmax.
        logits = logits[:, -1] if col is None else logits[torch.arange(len(col), device=self.device), col]
        logp = torch.log_softmax(logits.float(), dim=-1)[:, self._rating_ids]
        return list(logp.double().exp().cpu().numpy())

    @torch.inference_mode()
    def _last_probs(self, seqs: list[list[int]]) -> list:
        # Left padding puts every prompt's last token in the last column, so the output layer
        # runs on one position per prompt (a vocabulary-sized product: most of a small model's
        # cost); positions count from each prompt's first token.
        ids, mask = self._pad(seqs, left=True)
        full = bool(mask.all())
        pos = None if full else (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=None if full else mask, position_ids=pos, use_cache=False,
                         logits_to_keep=1)
        return self._probs_at(out)

    @torch.inference_mode()
    def _shared_probs(self, items: list[tuple[list[int], list[list[int]], list[int]]]) -> list:
        heads = [h for h, _, _ in items]
        hid, hmask = self._pad(heads)
        pre = self.model(input_ids=hid, attention_mask=None if bool(hmask.all()) else hmask, use_cache=True, logits_to_keep=1)
        cache = pre.past_key_values
        sizes = torch.tensor([len(t) for _, t, _ in items], device=self.device)
        rows = torch.repeat_interleave(torch.arange(len(items), device=self.device), sizes)
        cache.batch_select_indices(rows)
        tails = [s for _, t, _ in items for s in t]
        # Suffixes left-padded (their last tokens in the last column: the output layer runs once
        # per prompt), except with sliding windows, which padding after the prefix would shift.
        left = self._window is None
        tid, tmask = self._pad(tails, left=left)
        if left:
            pos, keep, col = (tmask.cumsum(1) - 1).clamp(min=0), 1, None
        else:
            last = tmask.sum(1) - 1
            keep = torch.unique(last)  # sorted; the output layer runs at these positions of every row
            pos, col = torch.arange(tid.shape[1], device=self.device)[None, :], torch.searchsorted(keep, last)
        out = self.model(
            input_ids=tid,
            attention_mask=torch.cat([hmask[rows], tmask], dim=1),
            position_ids=hmask.sum(1)[rows][:, None] + pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        return self._probs_at(out, col)

    # ----- completions (the Serve rater app) ------------------------------------------

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    @torch.inference_mode()
    def complete(self, prompts, max_tokens=16, temperature=0.0, stop=None, logprobs=None, seed=None) -> list[Completion]:
        """Generate a completion per prompt: greedy at temperature 0, else sampling.

        ``stop``: strings that end a completion (not included in the text);
        ``logprobs``: None (no log-probabilities), 0 (of the generated tokens) or k > 0
        (also the k most likely tokens at each step). Log-probabilities are raw (before
        temperature), as vLLM's default.
        """
        from transformers import GenerationConfig

        seqs = [h + t for h, t in self.encode_batch(prompts)]
        self._check_lengths(seqs)
        eos = self._eos_ids()
        cfg = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            top_p=None,
            eos_token_id=eos,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=logprobs is not None,
            # Stop generating once every sequence of a batch has reached a stop string
            # (the text is still cut exactly in _finish).
            stop_strings=list(stop) if stop else None,
        )
        results: list[Completion | None] = [None] * len(seqs)
        for batch in length_batches([len(s) for s in seqs], self.batch_size, self.max_batch_tokens):
            if seed is not None:
                torch.manual_seed(seed)
            width = max(len(seqs[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):  # left padding: generation appends on the right
                ids[r, width - len(seqs[i]) :] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]) :] = 1
            args = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "generation_config": cfg,
                    "tokenizer": self.tokenizer if stop else None}
            try:
                gen = self.model.generate(**args)
            except ValueError as e:
                if not cfg.stop_strings or "stop string" not in str(e).lower():
                    raise
                # transformers cannot map some stop strings (control characters, say) to tokens:
                # generate without stopping early; _finish still cuts the text at the stop string.
                cfg.stop_strings, args["tokenizer"] = None, None
                gen = self.model.generate(**args)
            steps = torch.stack(gen.logits, 1).float().log_softmax(-1) if logprobs is not None else None
            for r, i in enumerate(batch):
                new = gen.sequences[r, width:].tolist()
                results[i] = self._finish(new, len(seqs[i]), eos, stop, None if steps is None else steps[r], logprobs)
        return results

    def _finish(self, new: list[int], n_prompt: int, eos: list[int], stop, logp, k) -> Completion:
        n, reason = len(new), "length"
        for j, t in enumerate(new):
            if t in eos:
                n, reason = j + 1, "stop"
                break
        text = self.tokenizer.decode(new[:n], skip_special_tokens=True)
        cut_text, stopped = truncate_at_stop(text, stop)
        if stopped:
            # The fewest tokens whose text covers the returned text.
            n = next(
                (j for j in range(1, n + 1) if len(self.tokenizer.decode(new[:j], skip_special_tokens=True)) >= len(cut_text)),
                n,
            )
            text, reason = cut_text, "stop"
        token_lp = top = None
        if logp is not None:
            chosen = torch.tensor(new[:n], device=logp.device)
            token_lp = logp[torch.arange(n, device=logp.device), chosen].tolist()
            if k:
                vals, idx = logp[:n].topk(k, dim=-1)
                top = [
                    {self.tokenizer.decode([t]): v for t, v in zip(ti.tolist(), vi.tolist(), strict=True)}
                    for ti, vi in zip(idx, vals, strict=True)
                ]
        return Completion(text, token_lp, n_prompt, n, reason, tuple(new[:n]), top)

