"""SelectIT scores: the token, sentence and model levels, pure numpy (docs/methods.md, "SelectIT").

Levels, for P = the raw next-token probabilities of the ratings "1".."5":

* token, one prompt: Q = softmax(P / ΣP) (``normalization="code"``, the released code)
  or Q = P / ΣP (``"paper"``); base = argmax Q + 1 (ties: the lowest rating);
  S_token = base · Σ_i (Q_base − Q_i) / 4.
* sentence, over the K prompts: S_sent = mean(S_token) / (1 + α · std(S_token)), with
  the population standard deviation (ddof=0, numpy's default, as in the released code).
* model, over M raters with θ_m parameters: S_model = Σ_m θ_m / Σθ · S_sent,m.

The score stage (selectray.stages.score) only produces the raw probabilities per
(row, prompt, model); the levels are computed from them afterwards, so α, the
normalization or the model weights can be changed without running any model again.
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


def selectit_levels(
    probs: list[np.ndarray], names: list[str], weights: list[float], alpha: float = 0.2, normalization: str = "code"
) -> dict[str, np.ndarray]:
    """Every level as output columns, from each model's (N, K, 5) probabilities.

    `score_token_<model>_p<k>` (N,) per model and prompt, `score_sentence_<model>` (N,)
    per model, and `score_model` (N,): the weighted mean over the models.
    """
    cols: dict[str, np.ndarray] = {}
    sentences = []
    for p, name in zip(probs, names, strict=True):
        tok = token_score(p, normalization)
        for k in range(tok.shape[1]):
            cols[f"score_token_{name}_p{k}"] = tok[:, k]
        sent = sentence_score(tok, alpha)
        cols[f"score_sentence_{name}"] = sent
        sentences.append(sent)
    cols["score_model"] = model_score(np.stack(sentences), weights)
    return cols
