"""Backends and the SelectIT scorer, against a plain reference computation on the same inputs.

The reference (`reference_probs`, conftest) runs one prompt per forward pass over the
full sequence with full-vocabulary logits and a float64 softmax: the obviously-correct
way. Tiny random-weight models (Llama, and Gemma 3 with sliding-window layers) cover the
batching, padding, KV-reuse and out-of-memory paths fast; the real embedded models
(SmolLM2-135M-Instruct, Gemma-3-270M) are loaded once per session.
"""

import importlib.util

import numpy as np
import pytest
import torch

from selectray.backends import make_backend
from selectray.backends.transformers import length_batches, split_on_oom
from selectray.errors import ConfigError, InputError, MissingDependencyError
from selectray.prompts import RATING_PROMPTS, build_rating_prompt
from selectray.scoring import row_scores
from selectray.stages.scorer import SelectITScorer


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])

# ----- tiny models: batching, padding, KV reuse, OOM ----------------------------------


@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_batched_equals_reference_on_tiny_llama(tiny, layout, rating_rows, prompts_for, reference_probs):
    prompts = prompts_for(rating_rows, layout)
    got = tiny.rating_probs(prompts)
    want = reference_probs(tiny, prompts)
    np.testing.assert_allclose(got.probs, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.other, 1 - want.sum(1), atol=1e-4)
    np.testing.assert_allclose(np.log(got.probs), np.log(want), atol=1e-3)
    assert want.max() > 0.05  # far from a flat distribution (1/vocab = 2e-5)


@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_sliding_window_model_equals_reference(tiny_gemma, layout, rating_rows, prompts_for, reference_probs):
    prompts = prompts_for(rating_rows, layout)
    np.testing.assert_allclose(tiny_gemma.rating_probs(prompts).probs, reference_probs(tiny_gemma, prompts), atol=1e-4, rtol=0)


def _count_tokens_run(backend, prompts):
    seen = []
    handle = backend.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].numel()), with_kwargs=True)
    try:
        backend.rating_probs(prompts)
    finally:
        handle.remove()
    return sum(seen)


def test_sample_first_runs_the_shared_prefix_once(tiny, rating_rows, prompts_for):
    prompts = prompts_for(rating_rows[:4], "sample-first")
    shared = _count_tokens_run(tiny, prompts)  # padding included
    plain = sum(tiny.count_tokens(prompts))
    prefixes = sum(len(tiny.encode_split(prompts[5 * r])[0]) for r in range(4))
    # Each row's prefix is read once instead of K=5 times (one copy's worth left for padding).
    assert shared <= plain - 3 * prefixes


def test_out_of_memory_batches_are_split_not_lost(tiny, rating_rows, prompts_for):
    prompts = prompts_for(rating_rows[:4], "paper")
    want = tiny.rating_probs(prompts).probs
    sizes = []

    def oom_above_two(module, args, kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = tiny.model.register_forward_pre_hook(oom_above_two, with_kwargs=True)
    try:
        got = tiny.rating_probs(prompts).probs
    finally:
        handle.remove()
    assert max(sizes) > 2 and sizes[-1] <= 2
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_split_on_oom_and_length_batches():
    calls = []

    def fn(items):
        calls.append(len(items))
        if len(items) > 1:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate; out of memory")
        return [x * 2 for x in items]

    assert split_on_oom(fn, [1, 2, 3]) == [2, 4, 6]
    with pytest.raises(RuntimeError, match="shape"):
        split_on_oom(lambda items: (_ for _ in ()).throw(RuntimeError("shape mismatch")), [1, 2])
    batches = length_batches([5, 50, 7, 48, 6], max_items=2, max_tokens=1000)
    assert batches == [[1, 3], [2, 4], [0]]
    assert length_batches([100, 100, 100], max_items=8, max_tokens=250) == [[0, 1], [2]]


def test_greedy_completion_equals_a_manual_argmax_loop(tiny):
    prompt = "Instruction: count to five.\nResponse:"
    (c,) = tiny.complete([prompt], max_tokens=6, temperature=0.0, logprobs=2)
    ids = tiny.encode(prompt)
    want, lps = [], []
    with torch.inference_mode():
        for _ in range(6):
            logp = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids + want])).logits[0, -1].double(), -1)
            want.append(int(logp.argmax()))
            lps.append(float(logp.max()))
    assert list(c.token_ids) == want[: c.completion_tokens]
    np.testing.assert_allclose(c.token_logprobs, lps[: c.completion_tokens], atol=1e-4)
    assert c.prompt_tokens == len(ids) and len(c.top_logprobs) == c.completion_tokens
    assert c.text == tiny.tokenizer.decode(want[: c.completion_tokens], skip_special_tokens=True)
    # Batched with a longer prompt (left padding) gives the same greedy tokens.
    batch = tiny.complete([prompt + " one two three four", prompt], max_tokens=6)
    assert batch[1].token_ids == c.token_ids and batch[1].token_logprobs is None


def test_stop_strings_cut_the_completion(tiny):
    (full,) = tiny.complete(["Say something:"], max_tokens=8)
    if len(full.text) < 3:
        pytest.skip("the random model produced too little text to cut")
    stop = full.text[len(full.text) // 2 :][:2]
    (cut,) = tiny.complete(["Say something:"], max_tokens=8, stop=[stop])
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens <= full.completion_tokens


def test_stop_strings_end_generation_early(tiny):
    calls = []
    hook = tiny.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        (full,) = tiny.complete(["Say something:"], max_tokens=12)
        n_full = len(calls)
        stop = tiny.tokenizer.decode(list(full.token_ids[:3]))
        if full.finish_reason != "length" or len(stop) < 2:
            pytest.skip("the random model's text does not allow a clean early stop")
        calls.clear()
        (cut,) = tiny.complete(["Say something:"], max_tokens=12, stop=[stop])
    finally:
        hook.remove()
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    assert len(calls) <= n_full - 6  # the model was not run for the remaining tokens


def test_backend_selection_errors():
    with pytest.raises(ConfigError, match="unknown backend"):
        make_backend("onnx", "smollm2-135m")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(MissingDependencyError, match=r"pip install 'selectray\[gpu\]'"):
            make_backend("vllm", "smollm2-135m")


# ----- the scoring step -----------------------------------------------------------------


def _batch(rows, with_input=True):
    batch = {
        "id": np.array([f"r{i}" for i in range(len(rows))]),
        "instruction": np.array([r[0] for r in rows], dtype=object),
        "output": np.array([r[2] for r in rows], dtype=object),
    }
    if with_input:
        batch["input"] = np.array([r[1] for r in rows], dtype=object)
    return batch


def test_scorer_output_columns(tiny_llama_dir, tiny, rating_rows, prompts_for, reference_probs):
    scorer = SelectITScorer(tiny.loaded, device="cpu", batch_size=8)
    out = scorer(_batch(rating_rows[:3]))
    k = len(RATING_PROMPTS)
    assert set(out) == {"id", "model", "prompt_index", "p1", "p2", "p3", "p4", "p5", "p_other", "truncated", "too_long"}
    assert all(len(v) == 3 * k for v in out.values())
    assert list(out["id"][:k + 1]) == ["r0"] * k + ["r1"] and list(out["prompt_index"][:k + 1]) == [*range(k), 0]
    assert set(out["model"]) == {tiny_llama_dir}
    probs = np.stack([out[f"p{i}"] for i in range(1, 6)], 1)
    np.testing.assert_allclose(out["p_other"], 1 - probs.sum(1))
    np.testing.assert_allclose(probs, reference_probs(tiny, prompts_for(rating_rows[:3], "paper")), atol=1e-4)
    assert not out["truncated"].any() and not out["too_long"].any()
    # No input column: rows without context.
    no_input = scorer(_batch(rating_rows[:1], with_input=False))
    np.testing.assert_allclose(no_input["p1"], reference_probs(tiny, prompts_for([rating_rows[0]], "paper"))[:, 0], atol=1e-4)


def test_scorer_names_missing_columns(tiny, rating_rows):
    scorer = SelectITScorer(tiny.loaded, device="cpu", output_column="completion")
    with pytest.raises(InputError, match="'completion'"):
        scorer(_batch(rating_rows[:2]))


def test_too_long_rows_are_truncated_or_flagged(tiny, rating_rows):
    long_row = ("Describe the sea.", "", "The sea is wide and deep. " * 40)
    rows = [rating_rows[1], long_row, ("Explain. " * 80, "", "Short.")]
    trunc = SelectITScorer(tiny.loaded, device="cpu", max_length=160, too_long="truncate")
    out = trunc(_batch(rows))
    k = len(RATING_PROMPTS)
    assert list(out["truncated"][::k]) == [False, True, False]
    assert list(out["too_long"][::k]) == [False, False, True]  # the instruction alone does not fit
    assert np.isfinite(out["p1"][: 2 * k]).all() and np.isnan(out["p1"][2 * k :]).all()
    # Each prompt's cut is the longest response prefix ending at one of the response's own
    # token ends (the scorer's rule) that fits: the kept text fits, the next token end does not.
    ends = [e for _, e in tiny.tokenizer(long_row[2], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    for rp, fitted in zip(RATING_PROMPTS, trunc.fit([long_row]), strict=True):
        prefix, suffix = fitted.prompt
        kept = suffix.split("Response: ")[1].rsplit("\nThe answer is: ", 1)[0]
        assert fitted.truncated and long_row[2].startswith(kept) and len(kept) in ends
        assert fitted.ids == tiny.encode_split((prefix, suffix)) and len(tiny.encode((prefix, suffix))) <= 160
        longer = build_rating_prompt(rp, long_row[0], "", long_row[2][: min(e for e in ends if e > len(kept))])
        assert len(tiny.encode(longer)) > 160
    # A (row, prompt) result does not depend on the other prompts scored with it.
    alone = SelectITScorer(tiny.loaded, prompts=[RATING_PROMPTS[2]], max_length=160)(_batch(rows[:2]))
    np.testing.assert_allclose(alone["p3"], out["p3"][[2, k + 2]], rtol=1e-4, atol=1e-7)
    reject = SelectITScorer(tiny.loaded, device="cpu", max_length=160, too_long="reject")(_batch(rows))
    assert list(reject["too_long"][::k]) == [False, True, True] and not reject["truncated"].any()
    np.testing.assert_allclose(reject["p1"][:k], out["p1"][:k], rtol=1e-4, atol=1e-7)


def test_scorer_rejects_bad_options(tiny):
    with pytest.raises(ConfigError):
        SelectITScorer(tiny.loaded, layout="answer-first")
    with pytest.raises(ConfigError):
        SelectITScorer(tiny.loaded, too_long="drop")


# ----- the real embedded models ---------------------------------------------------------


@pytest.mark.slow
def test_smollm2_rating_tokens_and_bos(smol):
    assert smol.rating.ids == (33, 34, 35, 36, 37) and smol.rating.form == "bare"
    assert smol.add_bos is False and smol.params == 134_515_008 and smol.has_chat_template


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_smollm2_batched_equals_one_prompt_at_a_time(smol, layout, rating_rows, prompts_for, reference_probs):
    prompts = prompts_for(rating_rows[:5], layout)
    np.testing.assert_allclose(smol.rating_probs(prompts).probs, reference_probs(smol, prompts), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_gemma_adds_bos_and_scores_finite(gemma, rating_rows, prompts_for, reference_probs):
    # The GGUF says add_bos_token; the transformers conversion drops it, selectray restores it.
    assert gemma.add_bos and gemma.encode("Hi")[0] == gemma.tokenizer.bos_token_id == 2
    assert gemma.rating.ids == (236770, 236778, 236800, 236812, 236810) and gemma.rating.form == "bare"
    # Word-level pieces, as Gemma's SentencePiece-BPE (the raw GGUF conversion gives "▁t", "he", ...).
    words = gemma.tokenizer.tokenize("Rate how well the response follows the instruction")
    assert words == ["Rate", "▁how", "▁well", "▁the", "▁response", "▁follows", "▁the", "▁instruction"]
    assert gemma.params == 268_098_176 and not gemma.has_chat_template
    scorer = SelectITScorer(gemma.loaded, batch_size=8)
    out = scorer(_batch(rating_rows[:5]))
    probs = np.stack([out[f"p{i}"] for i in range(1, 6)], 1)
    assert np.isfinite(probs).all() and (probs > 0).all() and (out["p_other"] > 0).all()
    np.testing.assert_allclose(probs[:2], reference_probs(gemma, prompts_for(rating_rows[:1], "paper")[:2]), atol=1e-4, rtol=0)
    assert np.isfinite(row_scores(probs.reshape(5, 5, 5))).all()


@pytest.mark.slow
def test_smollm2_reads_the_prompts_as_rating_requests_in_both_layouts(smol, rating_rows):
    """The real model puts most of its next-token mass on "1".."5" after the rating cue (a wrong
    rating token or an off-by-one last position would leave almost none there: a 49k-token
    vocabulary), and the two layouts order the rows in the same direction."""
    scores = {}
    for layout in ("paper", "sample-first"):
        out = SelectITScorer(smol.loaded, batch_size=8, layout=layout)(_batch(rating_rows))
        probs = np.stack([out[f"p{i}"] for i in range(1, 6)], 1)
        assert np.isfinite(probs).all()
        mass = probs.sum(1)
        np.testing.assert_allclose(mass + out["p_other"], 1.0, atol=1e-6)
        assert mass.mean() > 0.5, f"{layout}: mean mass on the ratings {mass.mean():.3f}"
        scores[layout] = row_scores(probs.reshape(len(rating_rows), 5, 5))
    rho = spearman(scores["paper"], scores["sample-first"])
    print(f"\nSmolLM2, {len(rating_rows)} rows: Spearman(paper, sample-first) = {rho:.3f}")
    assert rho > 0  # measured 0.58 on these 10 rows; the layouts are different prompts, so not 1


@pytest.mark.slow
def test_smollm2_chat_completion(smol):
    prompt = smol.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    (c,) = smol.complete([prompt], max_tokens=8, logprobs=0)
    assert c.prompt_tokens == len(smol.encode(prompt)) and 1 <= c.completion_tokens <= 8
    assert len(c.token_logprobs) == c.completion_tokens and all(lp <= 0 for lp in c.token_logprobs)
    assert "Paris" in c.text


def test_a_stop_string_transformers_cannot_tokenize_still_cuts_the_text(tiny):
    # transformers' stop-string criteria refuse characters no token spells ("\x16"); the backend
    # then generates to max_tokens and cuts at the stop string itself (the rater app must not 500).
    (plain,) = tiny.complete(["0"], max_tokens=6)
    (odd,) = tiny.complete(["0"], max_tokens=6, stop=["\x16"])
    assert odd.text == plain.text and odd.completion_tokens == plain.completion_tokens
    cut = plain.text[1:2]
    if cut:  # a stop string that does occur ends the text before it
        (stopped,) = tiny.complete(["0"], max_tokens=6, stop=["\x16", cut])
        assert stopped.text == plain.text[: plain.text.index(cut)]
