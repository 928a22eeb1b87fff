"""The SelectIT scorer: a Ray Data `map_batches` callable giving rating probabilities per (row, prompt).

Builds each row's K rating prompts (selectray.prompts), fits them to the model's
context, and reads the next-token probabilities of "1".."5" from a backend
(selectray.backends). The levels are computed later (selectray.scoring).
"""

from __future__ import annotations

import numpy as np

TOO_LONG_POLICIES = ("truncate", "reject")


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
    ``too_long="truncate"`` the response is cut from its end (at a character, the longest
    prefix that fits) for that prompt; a prompt that does not fit even with an empty
    response, or any too-long prompt with ``too_long="reject"``, is flagged too_long. Each
    (row, prompt) pair is fitted on its own, so its result does not depend on the other
    prompts scored with it.

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

    def _fit(self, instruction: str, input: str, output: str) -> list[tuple[tuple[str, str] | None, bool]]:
        """For each rating prompt: (prompt, truncated), or (None, False) when it cannot fit.

        Each prompt is fitted on its own, so a (row, prompt) result never depends on which
        other prompts are scored in the same call (the score cache relies on that).
        """
        limit, out = self.backend.context_length, []
        for rp in self.prompts:

            def size(text: str, rp=rp) -> int:
                return self.backend.count_tokens([self._prompt(rp, instruction, input, text)])[0]

            if size(output) <= limit:
                out.append((self._prompt(rp, instruction, input, output), False))
                continue
            if self.too_long == "reject" or size("") > limit:
                out.append((None, False))
                continue
            lo, hi = 0, len(output)  # the longest prefix of the response that fits: binary search
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if size(output[:mid]) <= limit else (lo, mid - 1)
            out.append((self._prompt(rp, instruction, input, output[:lo]), True))
        return out

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
        prompts, where = [], []
        truncated = np.zeros(len(ids) * k, dtype=bool)
        too_long = np.zeros(len(ids) * k, dtype=bool)
        for r in range(len(ids)):
            for j, (prompt, cut) in enumerate(self._fit(instr[r], inputs[r], outs[r])):
                if prompt is None:
                    too_long[r * k + j] = True
                else:
                    truncated[r * k + j] = cut
                    prompts.append(prompt)
                    where.append(r * k + j)
        probs = np.full((len(ids) * k, 5), np.nan)
        if prompts:
            probs[where] = self.backend.rating_probs(prompts).probs
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
