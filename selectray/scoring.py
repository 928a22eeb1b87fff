"""SelectIT scores (SPEC 3.4): the formulas (pure numpy) and the Ray Data scoring step.

Levels, for P = the raw next-token probabilities of the ratings "1".."5":

* token, one prompt: Q = softmax(P / ΣP) (``normalization="code"``, the released code)
  or Q = P / ΣP (``"paper"``); base = argmax Q + 1 (ties: the lowest rating);
  S_token = base · Σ_i (Q_base − Q_i) / 4.
* sentence, over the K prompts: S_sent = mean(S_token) / (1 + α · std(S_token)), with
  the population standard deviation (ddof=0, numpy's default, as in the released code).
* model, over M raters with θ_m parameters: S_model = Σ_m θ_m / Σθ · S_sent,m.

The scoring step (`SelectITScorer`) only produces the raw probabilities per (row, prompt);
the levels are computed afterwards, so α, the normalization or the model weights can be
changed without running any model again.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("code", "paper")


def token_score(probs, normalization: str = "code") -> np.ndarray:
    """Token-level SelectIT score of rating-probability vectors.

    ``probs``: array (..., 5), the raw probabilities of "1".."5" (need not sum to 1).
    Returns float64 array (...). A vector that carries no information (all zero, any
    negative, NaN or infinite entry) scores 0.0; the output is never NaN. Ties for the
    largest Q resolve to the lowest rating (numpy argmax).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[-1:] != (5,):
        raise ValueError(f"probs must have shape (..., 5), got {p.shape}")
    total = p.sum(axis=-1, keepdims=True)
    valid = np.isfinite(p).all(axis=-1, keepdims=True) & (p >= 0).all(axis=-1, keepdims=True) & (total > 0)
    # Invalid vectors get a uniform Q: then every Q_base - Q_i is 0 and the score is 0.
    rel = np.where(valid, p / np.where(valid, total, 1.0), 0.2)
    match normalization:
        case "paper":
            q = rel
        case "code":
            e = np.exp(rel - rel.max(axis=-1, keepdims=True))
            q = e / e.sum(axis=-1, keepdims=True)
        case _:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    base_idx = q.argmax(axis=-1)
    q_base = np.take_along_axis(q, base_idx[..., None], axis=-1)
    return (base_idx + 1) * (q_base - q).sum(axis=-1) / 4.0


def sentence_score(token_scores, alpha: float = 0.2) -> np.ndarray:
    """Sentence-level score over the last axis (the K prompts): mean / (1 + α·std).

    std is the population standard deviation (ddof=0). Non-finite token scores are
    treated as 0 (token_score never produces them).
    """
    s = np.asarray(token_scores, dtype=np.float64)
    s = np.where(np.isfinite(s), s, 0.0)
    return s.mean(axis=-1) / (1.0 + alpha * s.std(axis=-1))


def model_score(sentence_scores, param_counts) -> np.ndarray:
    """Model-level score: Σ_m θ_m/Σθ · S_sent,m.

    ``sentence_scores``: (M, N), one row per rater model; ``param_counts``: (M,), all > 0.
    Returns (N,). The weights sum to one (the released code's do not).
    """
    s = np.asarray(sentence_scores, dtype=np.float64)
    theta = np.asarray(param_counts, dtype=np.float64)
    if s.ndim != 2 or theta.shape != (s.shape[0],):
        raise ValueError(f"need sentence_scores (M, N) and param_counts (M,), got {s.shape} and {theta.shape}")
    if not (np.isfinite(theta).all() and (theta > 0).all()):
        raise ValueError(f"param_counts must be positive and finite, got {theta.tolist()}")
    return (theta / theta.sum()) @ s


def row_scores(probs, alpha: float = 0.2, normalization: str = "code") -> np.ndarray:
    """Sentence-level scores of rows from their (N, K, 5) rating probabilities."""
    return sentence_score(token_score(probs, normalization), alpha)


def scores_from_table(table, alpha: float = 0.2, normalization: str = "code", param_counts=None):
    """SelectIT scores from the exploded output of `SelectITScorer` (all models, all rows).

    ``table``: a mapping (or DataFrame) with columns id, model, prompt_index, p1..p5.
    Every (id, model) must have the same set of prompt indices. ``param_counts``: {model:
    θ}; needed only when there is more than one model. Returns ``(ids, scores, per_model)``:
    the distinct ids sorted, their S_model, and {model: S_sent array aligned with ids}.
    """
    ids = np.asarray(table["id"])
    if ids.dtype == object:
        ids = ids.astype(str)
    models = np.asarray(table["model"]).astype(str)
    prompt = np.asarray(table["prompt_index"]).astype(np.int64)
    probs = np.stack([np.asarray(table[f"p{i}"], dtype=np.float64) for i in range(1, 6)], axis=-1)
    uniq_ids, row = np.unique(ids, return_inverse=True)
    uniq_prompts, col = np.unique(prompt, return_inverse=True)
    per_model = {}
    for m in np.unique(models):
        sel = models == m
        grid = np.full((len(uniq_ids), len(uniq_prompts), 5), np.nan)
        grid[row[sel], col[sel]] = probs[sel]
        if np.isnan(grid).all(axis=-1).any():
            raise ValueError(f"model {m!r}: some (id, prompt) pairs are missing from the table")
        per_model[str(m)] = row_scores(grid, alpha, normalization)
    names = sorted(per_model)
    if len(names) == 1:
        return uniq_ids, per_model[names[0]], per_model
    if param_counts is None or any(m not in param_counts for m in names):
        raise ValueError(f"param_counts must give a parameter count for every model: {names}")
    stacked = np.stack([per_model[m] for m in names])
    return uniq_ids, model_score(stacked, [param_counts[m] for m in names]), per_model


# ----- the scoring step ----------------------------------------------------------------

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
