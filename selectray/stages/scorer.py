"""The SelectIT scorer: a Ray Data `map_batches` callable giving rating probabilities per (row, prompt).

Builds each row's K rating prompts (selectray.prompts), tokenizes them once per batch
(one batched tokenizer call, each distinct text once), fits them to the model's context
on those ids, and reads the next-token probabilities of "1".."5" from a backend
(selectray.backends) given the ids. The levels are computed later (selectray.scoring).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

import numpy as np

TOO_LONG_POLICIES = ("truncate", "reject")
# English text averages about 4 characters per token. Above that many per token of context a
# row's prompts likely need cutting, and the cut search starts without tokenizing them whole.
# Only the work depends on it, never a result.
LIKELY_CUT_CHARS = 4


class Fitted(NamedTuple):
    """One (row, prompt) pair fitted to the context: ``prompt`` its (prefix, suffix) text and
    ``ids`` its (prefix ids with BOS, suffix ids), both None when it does not fit (too_long);
    ``truncated``: the response was cut."""

    prompt: tuple[str, str] | None
    ids: tuple[list[int], list[int]] | None
    truncated: bool


TOO_LONG = Fitted(None, None, False)


def cut_points(length: int, offsets) -> list[int]:
    """Where a response of ``length`` characters may be cut: 0, the end of each of its tokens
    (character offsets of the response tokenized on its own), and its full length."""
    return sorted({0, length, *(end for _, end in offsets if 0 < end < length)})


def _column(batch, name: str) -> list:
    values = batch[name]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _text(value) -> str:
    # Missing values (None, NaN from pandas) read as empty text.
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else str(value)


class SelectITScorer:
    """Ray Data ``map_batches`` callable: rating probabilities per (row, rating prompt).

    ``__init__`` loads the model once per actor. ``__call__(batch)`` takes a batch (dict of
    arrays or a DataFrame) with the columns ``id_column``, ``instruction_column``,
    ``output_column`` and, when present, ``input_column``, and returns one output row per
    (input row, prompt), row-major:

    ``id``; ``model`` (the model spec's name); ``prompt_index`` (0..K-1, into ``prompts``);
    ``p1``..``p5`` (float64, raw next-token probabilities of "1".."5" over the full
    vocabulary); ``p_other`` (1 − p1 − … − p5: the mass on every other token);
    ``truncated`` (the response was cut to fit the context); ``too_long`` (the row does not
    fit and was not scored: p1..p5 and p_other are NaN).

    Prompts longer than the context (``max_length``, capped by the model's own): with
    ``too_long="truncate"`` the response is cut from its end for that prompt; a prompt that
    does not fit even with an empty response, or any too-long prompt with
    ``too_long="reject"``, is flagged too_long. Each (row, prompt) pair is fitted on its
    own, so its result does not depend on the other prompts scored with it.

    The cut rule: the response is tokenized on its own, and it may be cut at the end of
    any of its tokens (`cut_points`: character offsets, so the kept text is always a prefix
    of the response, never half a character). The kept prefix is the longest such one
    whose whole prompt, tokenized as the model reads it, fits: it fits, and the prompt
    with the response cut at the next token end does not (a prompt's length grows with
    the kept prefix; were a merge at the cut to break that, the cut found is one where
    this pair of conditions holds). The search starts where the token counts put the cut
    and checks it with the whole prompt, many prompts per tokenizer call, so a batch
    costs a few tokenizer calls however many prompts are cut.

    ``model``: a model spec, or an already loaded `selectray.models.LoadedModel`
    (transformers backend only; tests and benchmarks share one that way).
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        backend: str = "transformers",
        *,
        device: str = "auto",
        batch_size: int = 8,
        prompts=None,
        layout: str = "paper",
        max_length: int | None = None,
        too_long: str = "truncate",
        id_column: str = "id",
        instruction_column: str = "instruction",
        input_column: str | None = "input",
        output_column: str = "output",
        dtype: str | None = None,
        cache_dir=None,
        backend_options: dict | None = None,
    ):
        from selectray.backends import make_backend
        from selectray.errors import ConfigError
        from selectray.prompts import LAYOUTS, check_rating_prompts

        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if too_long not in TOO_LONG_POLICIES:
            raise ConfigError(f"too_long must be one of {TOO_LONG_POLICIES}, got {too_long!r}")
        self.prompts = check_rating_prompts(prompts)
        self.layout, self.too_long = layout, too_long
        self.id_column, self.instruction_column = id_column, instruction_column
        self.input_column, self.output_column = input_column, output_column
        options = dict(backend_options or {})
        if backend == "transformers":
            options.setdefault("device", device)
        self.backend = make_backend(
            backend, model, batch_size=batch_size, max_length=max_length, dtype=dtype, cache_dir=cache_dir, **options
        )
        self.model_name = self.backend.model_name
        self.fingerprint = self.backend.fingerprint
        self.params = self.backend.params

    def _prompt(self, rating_prompt: str, instruction: str, input: str, output: str) -> tuple[str, str]:
        from selectray.prompts import adapt_to_tokens, build_rating_prompt

        prefix, suffix = build_rating_prompt(rating_prompt, instruction, input, output, self.layout)
        return prefix, adapt_to_tokens(suffix, self.backend.rating)

    def row_prompts(self, instruction: str, input: str, output: str) -> list[tuple[str, str]]:
        """The K (prefix, suffix) prompts of one row, adapted to the rating tokens."""
        return [self._prompt(rp, instruction, input, output) for rp in self.prompts]

    def fit(self, rows: list[tuple[str, str, str]]) -> list[Fitted]:
        """Each row's K prompts, row-major, tokenized and fitted to the context (see the class)."""
        limit = self.backend.context_length
        texts = [self._prompt(rp, *row) for row in rows for rp in self.prompts]
        out = [TOO_LONG] * len(texts)
        cuts: dict[int, tuple[list[int], list[int]]] = {}
        # pair -> {cut index: (tokens, prompt, ids)}: what the cut search starts from
        seen = self._response_first(rows, texts, cuts) if self.too_long == "truncate" else {}
        whole = [p for p in range(len(texts)) if p not in seen]
        for p, ids in zip(whole, self.backend.encode_batch([texts[p] for p in whole]), strict=True):
            n = len(ids[0]) + len(ids[1])
            if n <= limit:
                out[p] = Fitted(texts[p], ids, False)
            elif self.too_long == "truncate":
                seen[p] = {-1: (n, texts[p], ids)}  # -1: the whole response (its cut index once known)
        if seen:
            for p, fitted in self._truncate(rows, seen, cuts).items():
                out[p] = fitted
        return out

    def _cut_points(self, rows, need: list[int], cuts: dict) -> None:
        """Fill ``cuts[r]`` = (the response's cut points, its tokens kept by each) for rows ``need``."""
        need = [r for r in need if r not in cuts]
        for r, (_, offsets) in zip(need, self.backend.encode_texts([rows[r][2] for r in need], offsets=True), strict=True):
            ends = sorted(end for _, end in offsets)
            points = cut_points(len(rows[r][2]), offsets)
            cuts[r] = (points, [bisect_right(ends, c) for c in points])

    def _response_first(self, rows, texts, cuts: dict) -> dict[int, dict]:
        """Pairs that go straight to the cut search, without tokenizing their whole prompt.

        A row with a prompt of more than LIKELY_CUT_CHARS characters per token of context will
        likely be cut: its response is tokenized first (the search needs its token ends anyway),
        and its prompts with an empty response. A pair whose two counts add up to more than the
        context skips the whole prompt's tokenization; the search measures it should it reach
        the last cut, so an estimate that was wrong (a merge where the response joins the
        prompt) cuts nothing.
        """
        k, limit = len(self.prompts), self.backend.context_length
        chars = LIKELY_CUT_CHARS * limit
        need = [r for r in range(len(rows)) if any(len(a) + len(b) > chars for a, b in texts[r * k:(r + 1) * k])]
        if not need:
            return {}
        self._cut_points(rows, need, cuts)
        pairs = [p for r in need for p in range(r * k, (r + 1) * k)]
        empty = [self._prompt(self.prompts[p % k], *rows[p // k][:2], "") for p in pairs]
        seen = {}
        for p, text, ids in zip(pairs, empty, self.backend.encode_batch(empty), strict=True):
            n = len(ids[0]) + len(ids[1])
            if n + cuts[p // k][1][-1] > limit:
                seen[p] = {0: (n, text, ids)}
        return seen

    def _truncate(self, rows, seen: dict[int, dict], cuts: dict) -> dict[int, Fitted]:
        """The pairs in ``seen`` (pair -> lengths measured so far, by cut index) with their
        responses cut by the class's rule, or too_long.

        Each pair keeps a bracket over its response's cut points: ``lo`` fits and ``hi`` does
        not (-1: not known yet; ``hi`` starts at the whole response, measured or only estimated
        not to fit), narrowed each round; the probes of all pairs in a round are tokenized in
        one call. A round probes the cut the token counts predict and the next one (the whole
        response too when it is next and was only estimated); the prediction is corrected with
        the lengths measured, and after three rounds the bracket is bisected.
        """
        k, limit = len(self.prompts), self.backend.context_length
        self._cut_points(rows, sorted({p // k for p in seen}), cuts)
        done: dict[int, Fitted] = {}
        live = {}  # pair -> [lo, hi, the prompt's tokens besides the response's, hi measured]
        for p, m in seen.items():
            points, kept = cuts[p // k]
            last = len(points) - 1
            m = {last if u < 0 else u: v for u, v in m.items()}
            fits = [u for u, (n, _, _) in m.items() if n <= limit]
            over = [u for u, (n, _, _) in m.items() if n > limit]
            lo, hi = max(fits, default=-1), min(over, default=last)
            if lo >= 0:
                done[p] = Fitted(m[lo][1], m[lo][2], lo < last)
            u = lo if lo >= 0 else hi
            live[p] = [lo, hi, m[u][0] - kept[u], hi in over]
        rnd = 0
        while live := {p: st for p, st in live.items() if st[1] > st[0] + 1 or not st[3]}:  # else resolved
            probes = []
            for p, (lo, hi, base, hi_known) in live.items():
                if hi == lo + 1:  # only the estimated whole response is left: measure it
                    probes.append((p, hi))
                    continue
                kept = cuts[p // k][1]
                guess = bisect_right(kept, limit - base) - 1 if rnd < 3 else (lo + hi) // 2
                guess = min(max(guess, lo, 0), hi - 1)
                probes += [(p, u) for u in sorted({guess, guess + 1}) if lo < u < hi or (u == hi and not hi_known)]
            texts = [self._prompt(self.prompts[p % k], *rows[p // k][:2], rows[p // k][2][: cuts[p // k][0][u]])
                     for p, u in probes]
            measured: dict[int, dict[int, int]] = {}
            for (p, u), text, ids in zip(probes, texts, self.backend.encode_batch(texts), strict=True):
                state, n = live[p], len(ids[0]) + len(ids[1])
                measured.setdefault(p, {})[u] = n
                if not (state[0] < u < state[1] or (u == state[1] and not state[3])):
                    continue  # outside the bracket an earlier probe left
                if n <= limit:
                    state[0] = u
                    done[p] = Fitted(text, ids, u < len(cuts[p // k][0]) - 1)
                if n > limit or u == state[1]:  # hi measured: a cut that does not fit, or the whole that does
                    state[1], state[3] = max(u, state[0]), True
            for p, m in measured.items():  # correct the prediction with a length measured near the cut
                lo, hi, _, _ = state = live[p]
                u = lo if lo > 0 and lo in m else hi if hi in m else lo
                if u in m:
                    state[2] = m[u] - cuts[p // k][1][u]
            rnd += 1
        # Resolved: lo is the cut, or -1 when not even the empty response fits (too_long).
        return {p: done.get(p, TOO_LONG) for p in seen}

    def __call__(self, batch) -> dict[str, np.ndarray]:
        from selectray.errors import InputError

        required = [self.id_column, self.instruction_column, self.output_column]
        missing = [c for c in required if c not in batch]
        if missing:
            raise InputError(
                f"SelectIT scoring needs the column(s) {', '.join(map(repr, missing))}; the batch has "
                f"{', '.join(map(repr, list(batch.keys() if hasattr(batch, 'keys') else batch)))}"
            )
        ids = np.asarray(batch[self.id_column])
        instr = [_text(v) for v in _column(batch, self.instruction_column)]
        outs = [_text(v) for v in _column(batch, self.output_column)]
        inputs = (
            [_text(v) for v in _column(batch, self.input_column)]
            if self.input_column and self.input_column in batch
            else [""] * len(ids)
        )
        k = len(self.prompts)
        fitted = self.fit(list(zip(instr, inputs, outs, strict=True)))
        truncated = np.fromiter((f.truncated for f in fitted), dtype=bool, count=len(fitted))
        too_long = np.fromiter((f.ids is None for f in fitted), dtype=bool, count=len(fitted))
        where = np.flatnonzero(~too_long)
        probs = np.full((len(ids) * k, 5), np.nan)
        if len(where):
            probs[where] = self.backend.rating_probs_ids([fitted[i].ids for i in where]).probs
        result = {
            "id": np.repeat(ids, k),
            "model": np.array([self.model_name] * (len(ids) * k), dtype=object),
            "prompt_index": np.tile(np.arange(k, dtype=np.int32), len(ids)),
        }
        for i in range(5):
            result[f"p{i + 1}"] = probs[:, i]
        result["p_other"] = 1.0 - probs.sum(axis=1)
        result["truncated"] = truncated
        result["too_long"] = too_long
        return result
