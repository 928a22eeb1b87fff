"""selectray eval's core: response-only loss, training, held-out filtering, random subsets, the CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selectray.evaluate import encode, held_out, random_subset, response_loss, t_interval, train
from selectray.export import TextRows


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from selectray.models import load_model

    return load_model(tiny_llama_dir, device="cpu", dtype="float32")


def rows(*triples, ids=None) -> TextRows:
    return TextRows(list(ids or [None] * len(triples)), *(list(col) for col in zip(*triples)))


WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "forest", "window", "garden",
         "silver", "rocket", "pepper", "castle", "violin", "harbor", "meadow", "button", "planet", "marble",
         "jacket", "pillow", "spider", "ladder", "mirror", "tunnel", "anchor", "basket", "feather"]


def repeat_rows(words):
    """Rows of one template: repeat a word three times."""
    return rows(*[(f"Repeat the word {w} three times.", "", f"{w} {w} {w}.") for w in words])


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_lowers_the_loss_on_rows_like_its_training_rows(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    before_state = state(model)
    train_ex, _ = encode(tok, repeat_rows(WORDS[:20]), 64, tiny_lm.add_bos)
    held_ex, _ = encode(tok, repeat_rows(WORDS[20:]), 64, tiny_lm.add_bos)  # same template, other words
    pad = tok.pad_token_id
    before = response_loss(model, held_ex, pad_id=pad)
    try:
        losses = train(model, train_ex, steps=40, lr=3e-3, batch_size=8, seed=0, pad_id=pad)
        after = response_loss(model, held_ex, pad_id=pad)
    finally:
        model.load_state_dict(before_state)
    assert len(losses) == 40
    assert after < before - 2.0, (before, after)  # a random model starts near ln(49152) ~ 10.8
    assert response_loss(model, held_ex, pad_id=pad) == pytest.approx(before)  # the restore worked


def test_training_is_deterministic_per_seed(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    base = state(model)
    ex, _ = encode(tok, repeat_rows(WORDS[:10]), 64, tiny_lm.add_bos)
    runs = []
    try:
        for seed in (3, 3, 4):
            model.load_state_dict(base)
            runs.append(train(model, ex, steps=3, lr=1e-3, batch_size=4, seed=seed, pad_id=tok.pad_token_id))
    finally:
        model.load_state_dict(base)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # another seed: other batches


def _hand_nll(model, prompt_ids, response_ids) -> tuple[float, int]:
    """Summed NLL of the response tokens, from one unpadded forward pass in float64."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    n = len(prompt_ids)
    return -sum(float(logp[n - 1 + k, t]) for k, t in enumerate(response_ids)), len(response_ids)


def test_loss_covers_the_response_tokens_only(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    assert not tiny_lm.add_bos  # SmolLM2's tokenizer adds no BOS, so the hand-built ids start with the prompt
    r = rows(("Translate to French.", "Good morning", "Bonjour"), ("Name a colour.", "", "Red, like a ripe tomato in summer."))
    (ex1, ex2), truncated = encode(tok, r, 256, False)
    assert truncated == 0
    p1 = tok.encode("### Instruction:\nTranslate to French.\n\nGood morning\n\n### Response:\n", add_special_tokens=False)
    r1 = tok.encode("Bonjour", add_special_tokens=False) + [tok.eos_token_id]
    p2 = tok.encode("### Instruction:\nName a colour.\n\n### Response:\n", add_special_tokens=False)
    r2 = tok.encode("Red, like a ripe tomato in summer.", add_special_tokens=False) + [tok.eos_token_id]
    assert (ex1.ids, ex1.n_prompt) == (p1 + r1, len(p1))
    assert (ex2.ids, ex2.n_prompt) == (p2 + r2, len(p2))

    s1, n1 = _hand_nll(model, p1, r1)
    s2, n2 = _hand_nll(model, p2, r2)
    assert response_loss(model, [ex1], pad_id=tok.pad_token_id) == pytest.approx(s1 / n1, abs=1e-4)
    # Batched with padding: the token-weighted mean of both rows.
    got = response_loss(model, [ex1, ex2], pad_id=tok.pad_token_id, batch_size=2)
    assert got == pytest.approx((s1 + s2) / (n1 + n2), abs=1e-4)
    # Not the loss over every token (prompt included).
    with torch.inference_mode():
        everything = float(model(input_ids=torch.tensor([ex1.ids]), labels=torch.tensor([ex1.ids])).loss)
    assert abs(everything - s1 / n1) > 1e-2


def test_over_long_rows_keep_the_prompt_end_and_the_response_start(tiny_lm):
    tok = tiny_lm.tokenizer
    r = rows(("word " * 100, "", "one two three four five six seven eight nine ten " * 5))
    (ex,), truncated = encode(tok, r, 40, False)
    assert truncated == 1 and len(ex.ids) == 40
    p = tok.encode(f"### Instruction:\n{'word ' * 100}\n\n### Response:\n", add_special_tokens=False)
    resp = tok.encode("one two three four five six seven eight nine ten " * 5, add_special_tokens=False)
    assert ex.ids[: ex.n_prompt] == p[-ex.n_prompt :]
    assert ex.ids[ex.n_prompt :] == resp[: 40 - ex.n_prompt]
    assert 40 - ex.n_prompt == 20  # half the budget for the response


def test_random_subset_size_distinct_and_seeded():
    a, b, c = random_subset(50, 7, 0), random_subset(50, 7, 0), random_subset(50, 7, 1)
    assert len(a) == 7 and len(set(a.tolist())) == 7 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    from selectray.errors import SelectrayError

    with pytest.raises(SelectrayError, match="fewer than the selection's 8"):
        random_subset(7, 8, 0)


def test_eval_rows_in_the_pool_are_dropped_and_counted():
    pool = rows(("Name a colour.", "", "Red."), ("Add 2 and 2.", "", "4"), ids=["p1", "p2"])
    ev = rows(
        ("Something new.", "", "Fresh."),  # kept
        ("Other question.", "", "Other answer."),  # same id as a pool row: dropped
        ("Add  2 and 2. ", None, " 4"),  # the pool's text, other whitespace: dropped
        ("No answer here.", "", "  "),  # no response: dropped
        ("", "", "An answer without a question."),  # no instruction: dropped
        ("Name a colour.", "", "Blue."),  # same prompt, other response: kept
        ids=["e1", "p1", "e3", "e4", "e5", "e6"],
    )
    keep, dropped = held_out(ev, [pool])
    assert keep.tolist() == [0, 5]
    assert dropped == {"in_pool": 2, "missing_output": 1, "empty_instruction": 1}


def test_confidence_interval_by_hand():
    # Three differences 0.1, -0.2, 0.05: mean -1/60, sample std 0.160727512683, t(0.975, 2) = 4.302652729912.
    mean, ci = t_interval([0.1, -0.2, 0.05])
    assert mean == pytest.approx(-1 / 60)
    half = 4.302652729912 * 0.160727512683 / 3**0.5
    assert ci == pytest.approx([-1 / 60 - half, -1 / 60 + half], abs=1e-9)
    # Two differences 0.3, 0.5: std/sqrt(2) = 0.1 and t(0.975, 1) = 12.706204736175.
    assert t_interval([0.3, 0.5]) == (pytest.approx(0.4), pytest.approx([0.4 - 1.2706204736175, 0.4 + 1.2706204736175]))
    assert t_interval([0.25]) == (0.25, None)
