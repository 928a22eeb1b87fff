"""The SelectIT scorer's tokenization: one batched tokenizer call per batch, the same ids as one
`encode` per text, and the truncation rule (cut at a token end of the response, the longest that fits).

References are built here from the plain tokenizer (`tokenizer.encode` per text) and an exhaustive
scan over every cut point; the tiny random Llama on SmolLM2's tokenizer (`tiny`, conftest) and a
tiny Llama with a GPT-2-style byte-level tokenizer built here (BOS added, digits spelled with their
space: the answer cue's space is dropped) are the real models under test.
"""

import dataclasses

import numpy as np
import pytest

from selectray.prompts import RATING_PROMPTS, build_rating_prompt
from selectray.stages.scorer import SelectITScorer

UNICODE_ROWS = [
    ("Traduis « bonne journée » en allemand.", "", "Schönen Tag! Ça se dit « Schönen Tag », voilà."),
    ("用一句话解释光合作用。", "植物", "植物利用阳光把水和二氧化碳变成糖和氧气。🌱"),
    ("Combine: e\u0301 vs \u00e9, family 👨\u200d👩\u200d👧, RTL שלום", "ß", "OK 👍🏽 done\u00a0\u2003 ok"),
    ("Say the token <|endoftext|> literally.", "", "<|endoftext|> and <|im_start|> are special."),
    ("  leading and trailing spaces  ", "\n\n", "\tTabs\r\nand CRLF  "),
]


def _batch(rows):
    return {"id": np.arange(len(rows)), "instruction": np.array([r[0] for r in rows], dtype=object),
            "input": np.array([r[1] for r in rows], dtype=object), "output": np.array([r[2] for r in rows], dtype=object)}


def _probs(out):
    return np.stack([out[f"p{i}"] for i in range(1, 6)], 1)


def _reference_ids(backend, prompt):
    """(prefix ids with BOS, suffix ids) by plain per-text `tokenizer.encode` calls."""
    tok, (prefix, suffix) = backend.tokenizer, prompt
    bos = [tok.bos_token_id] if backend.add_bos else []
    if not prefix:
        return [], bos + tok.encode(suffix, add_special_tokens=False)
    return bos + tok.encode(prefix, add_special_tokens=False), tok.encode(suffix, add_special_tokens=False)


class CountingTokenizer:
    """The real tokenizer, counting the calls that tokenize text (batched or not, through
    transformers or its Rust tokenizer)."""

    def __init__(self, tok):
        self._tok, self.calls = tok, []
        self.backend_tokenizer = _CountingRust(tok.backend_tokenizer, self.calls)

    def __call__(self, texts, **kwargs):
        self.calls.append(len(texts) if isinstance(texts, list) else 1)
        return self._tok(texts, **kwargs)

    def encode(self, text, **kwargs):
        self.calls.append(1)
        return self._tok.encode(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


class _CountingRust:
    def __init__(self, rust, calls):
        self._rust, self._calls, self.texts = rust, calls, []  # texts: those tokenized for their ids

    def encode_batch(self, texts, **kwargs):
        self._calls.append(len(texts))
        return self._rust.encode_batch(texts, **kwargs)

    def encode_batch_fast(self, texts, **kwargs):
        self._calls.append(len(texts))
        self.texts += texts
        return self._rust.encode_batch_fast(texts, **kwargs)

    def __getattr__(self, name):
        if name == "encode":  # a way to tokenize that would go uncounted
            raise AttributeError(name)
        return getattr(self._rust, name)


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """A 1-layer random Llama with a byte-level BPE tokenizer whose digits carry their space
    ("Ġ1".."Ġ5", so the cue's trailing space is dropped) and that adds a BOS token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from selectray.backends.transformers import TransformersBackend

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    merges = [("Ġ", d) for d in "12345"] + [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("Ġ", "s"), ("e", "r"),
                                            ("i", "n"), ("o", "n"), ("Ã", "©"), ("Ġ", "w"), ("Ġw", "i")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    path = tmp_path_factory.mktemp("spaced-llama")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # probabilities of the ratings that vary between prompts (see conftest's _sharpen)
        model.get_output_embeddings().weight[[vocab["Ġ" + d] for d in "12345"]] *= 20
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return TransformersBackend(str(path), device="cpu", batch_size=6)


# ----- batched tokenization = one encode per text ----------------------------------------------


def test_encode_texts_equals_per_text_encode(tiny, spaced, rating_rows):
    texts = [t for row in rating_rows + UNICODE_ROWS for t in row] + ["", " ", "a", "\n", "🙂" * 7]
    for backend in (tiny, spaced):
        tok = backend.tokenizer
        assert backend.encode_texts(texts) == [tok.encode(t, add_special_tokens=False) for t in texts]
        for t, (ids, offsets) in zip(texts, backend.encode_texts(texts, offsets=True), strict=True):
            assert ids == tok.encode(t, add_special_tokens=False)
            assert [tuple(o) for o in offsets] == [tuple(o) for o in tok(t, add_special_tokens=False,
                                                                         return_offsets_mapping=True)["offset_mapping"]]


def test_encode_texts_ignores_truncation_or_padding_left_on_the_rust_tokenizer(tiny, rating_rows):
    import copy

    texts = [t for row in rating_rows for t in row if t]
    want = [tiny.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    backend = copy.copy(tiny)
    backend.tokenizer = copy.deepcopy(tiny.tokenizer)
    backend.tokenizer.backend_tokenizer.enable_truncation(max_length=3)  # as a saved tokenizer.json may carry
    assert backend.encode_texts(texts) == want
    backend.tokenizer.backend_tokenizer.enable_padding(length=500)
    assert backend.encode_texts(texts) == want


@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_encode_batch_equals_per_text_reference(tiny, spaced, rating_rows, prompts_for, layout):
    rows = rating_rows + UNICODE_ROWS
    prompts = prompts_for(rows, layout) + ["a plain string", "", ("same", "same"), ("x", "")]
    for backend in (tiny, spaced):
        want = [_reference_ids(backend, ("", p) if isinstance(p, str) else p) for p in prompts]
        assert backend.encode_batch(prompts) == want
        assert backend.count_tokens(prompts) == [len(h) + len(t) for h, t in want]
        assert [backend.encode_split(p) for p in prompts] == want
    assert spaced.add_bos and all(h[:1] == [1] or t[:1] == [1] for h, t in spaced.encode_batch(prompts))


@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_scorer_ids_bos_prefix_split_and_cue(spaced, rating_rows, layout):
    scorer = SelectITScorer(spaced.loaded, layout=layout)
    rows = rating_rows[:4] + UNICODE_ROWS
    fitted = scorer.fit(rows)
    k = len(RATING_PROMPTS)
    assert not any(f.truncated or f.ids is None for f in fitted)
    for r, row in enumerate(rows):
        heads = []
        for j, rp in enumerate(RATING_PROMPTS):
            f = fitted[r * k + j]
            prefix, suffix = build_rating_prompt(rp, *row, layout)
            # The digits carry the space: the cue is "The answer is:" without its space.
            assert f.prompt == (prefix, suffix[:-1]) and f.prompt[1].endswith("The answer is:")
            assert f.ids == _reference_ids(spaced, f.prompt)
            assert (f.ids[0] if layout == "sample-first" else f.ids[1])[0] == spaced.tokenizer.bos_token_id
            heads.append(f.ids[0])
        # sample-first: the K prompts of a row share the prefix ids exactly (KV reuse relies on it).
        assert all(h == heads[0] for h in heads) and (layout == "paper") == (heads[0] == [])


def test_scorer_probabilities_equal_the_one_prompt_reference(spaced, tiny, rating_rows, reference_probs):
    rows = rating_rows[:3] + UNICODE_ROWS[:3]
    for backend in (tiny, spaced):
        for layout in ("paper", "sample-first"):
            scorer = SelectITScorer(backend.loaded, layout=layout, batch_size=4)
            prompts = [p for row in rows for p in scorer.row_prompts(*row)]
            np.testing.assert_allclose(_probs(scorer(_batch(rows))), reference_probs(backend, prompts), atol=1e-4, rtol=0)


# ----- the truncation rule ---------------------------------------------------------------------


def _token_ends(backend, text):
    offsets = backend.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return sorted({0, len(text), *(e for _, e in offsets if 0 < e < len(text))})


def _adapted(backend, prompt):
    prefix, suffix = prompt
    return prefix, suffix[:-1] if backend.rating.strip_cue_space else suffix


def _longest_fitting_cut(backend, rp, row, layout, limit):
    """Exhaustive reference: the largest token end of the response whose whole prompt fits, or
    None when not even the empty response fits. (Every cut's prompt is counted; the batched
    tokenizer call used for that speed gives per-text `encode` ids, tested above.)"""
    ends = _token_ends(backend, row[2])
    prompts = [_adapted(backend, build_rating_prompt(rp, row[0], row[1], row[2][:c], layout)) for c in ends]
    bos = 1 if backend.add_bos else 0
    tok = backend.tokenizer
    sizes = [bos + sum(len(x) for x in tok([t for t in p if t], add_special_tokens=False)["input_ids"]) for p in prompts]
    fits = [c for c, n in zip(ends, sizes, strict=True) if n <= limit]
    return max(fits) if fits and fits[0] == 0 else None


LONG_ROWS = [
    ("Describe the sea.", "", "The sea is wide and deep. " * 40),
    ("Décris la mer 🌊.", "Sois bref.", "La mer est très large, profonde et bleue 🌊🐟; elle s'étend à perte de vue. " * 12),
    ("List numbers.", "", " ".join(str(i) for i in range(300))),
    ("Write one long word.", "", "supercalifragilistic" * 60),
]


# Three limits and both layouts, not all six pairs: the exhaustive reference costs ~20 s a case.
@pytest.mark.parametrize("limit, layout", [(70, "paper"), (113, "sample-first"), (200, "paper")])
def test_truncation_keeps_the_longest_token_prefix_that_fits(tiny, spaced, layout, limit):
    for backend in (tiny, spaced):
        scorer = SelectITScorer(backend.loaded, layout=layout, max_length=limit)
        fitted = scorer.fit(LONG_ROWS)
        for r, row in enumerate(LONG_ROWS):
            for j, rp in enumerate(RATING_PROMPTS):
                f = fitted[r * len(RATING_PROMPTS) + j]
                want = _longest_fitting_cut(backend, rp, row, layout, limit)
                if want is None:
                    assert f.ids is None and not f.truncated
                    continue
                expected = _adapted(backend, build_rating_prompt(rp, row[0], row[1], row[2][:want], layout))
                assert f.prompt == expected and f.ids == _reference_ids(backend, expected)
                assert f.truncated == (want < len(row[2]))
                assert len(f.ids[0]) + len(f.ids[1]) <= limit
                ends = _token_ends(backend, row[2])
                if want < len(row[2]):  # one more token of the response would not fit
                    longer = build_rating_prompt(rp, row[0], row[1], row[2][: ends[ends.index(want) + 1]], layout)
                    assert len(backend.encode(_adapted(backend, longer))) > limit


def test_a_prompt_estimated_too_long_that_fits_is_not_cut(tiny, monkeypatch):
    # "Response: The" is one token fewer than "Response: " and "The" tokenized apart, so the
    # estimate (prompt with an empty response + the response's tokens) is one over the context.
    from selectray.stages import scorer

    monkeypatch.setattr(scorer, "LIKELY_CUT_CHARS", 1)  # a short row takes the response-first path
    row, rp = ("Describe.", "", "The sea is wide."), RATING_PROMPTS[0]
    whole = _adapted(tiny, build_rating_prompt(rp, *row, "paper"))
    empty = _adapted(tiny, build_rating_prompt(rp, *row[:2], "", "paper"))
    limit = len(tiny.encode(whole))
    assert len(tiny.encode(empty)) + len(tiny.encode(row[2])) - tiny.add_bos > limit  # the premise
    assert len(whole[0]) + len(whole[1]) > limit  # so the response is tokenized first
    (fitted,) = SelectITScorer(tiny.loaded, prompts=[rp], layout="paper", max_length=limit).fit([row])
    assert fitted.prompt == whole and fitted.ids == _reference_ids(tiny, whole) and not fitted.truncated
    (cut,) = SelectITScorer(tiny.loaded, prompts=[rp], layout="paper", max_length=limit - 1).fit([row])
    assert cut.truncated and cut.prompt != whole and len(cut.ids[0]) + len(cut.ids[1]) <= limit - 1


def test_rows_of_few_characters_per_token_are_measured_whole_then_cut_by_the_same_rule(tiny):
    from selectray.stages.scorer import LIKELY_CUT_CHARS

    row, limit = ("Décris 🌊.", "", "🌊🐟 " * 40), 90
    for layout in ("paper", "sample-first"):
        scorer = SelectITScorer(tiny.loaded, layout=layout, max_length=limit)
        texts = [scorer._prompt(rp, *row) for rp in RATING_PROMPTS]
        assert all(len(a) + len(b) <= LIKELY_CUT_CHARS * limit for a, b in texts)  # not taken as likely cut
        for rp, f in zip(RATING_PROMPTS, scorer.fit([row]), strict=True):
            want = _longest_fitting_cut(tiny, rp, row, layout, limit)
            assert want is not None and want < len(row[2]) and f.truncated
            assert f.prompt == _adapted(tiny, build_rating_prompt(rp, row[0], row[1], row[2][:want], layout))


def test_truncated_pairs_do_not_depend_on_the_other_prompts_or_rows(tiny):
    rows = [LONG_ROWS[1], ("Short.", "", "Fine."), LONG_ROWS[0]]
    together = SelectITScorer(tiny.loaded, max_length=120, layout="sample-first").fit(rows)
    for j, rp in enumerate(RATING_PROMPTS):
        alone = SelectITScorer(tiny.loaded, prompts=[rp], max_length=120, layout="sample-first").fit([rows[2]])
        assert alone[0] == together[2 * len(RATING_PROMPTS) + j]


def test_rows_that_cannot_fit_are_too_long_and_reject_cuts_nothing(tiny):
    rows = [("Explain. " * 80, "", "Short."), LONG_ROWS[0], ("Hi.", "", "")]
    out = SelectITScorer(tiny.loaded, max_length=120)(_batch(rows))
    k = len(RATING_PROMPTS)
    assert out["too_long"][:k].all() and not out["too_long"][k:].any()
    assert out["truncated"][k : 2 * k].all() and not out["truncated"][2 * k :].any()
    assert np.isnan(_probs(out)[:k]).all() and np.isfinite(_probs(out)[k:]).all()
    reject = SelectITScorer(tiny.loaded, max_length=120, too_long="reject")(_batch(rows))
    assert list(reject["too_long"]) == [True] * 2 * k + [False] * k and not reject["truncated"].any()
    np.testing.assert_allclose(_probs(reject)[2 * k :], _probs(out)[2 * k :], atol=1e-7)


# ----- tokenizer calls per batch ---------------------------------------------------------------


def _counting_scorer(backend, **options):
    scorer = SelectITScorer(backend.loaded, **options)
    scorer.backend.tokenizer = counter = CountingTokenizer(scorer.backend.tokenizer)
    return scorer, counter


@pytest.mark.parametrize("layout", ["paper", "sample-first"])
def test_one_tokenizer_call_per_batch_without_truncation(tiny, rating_rows, layout):
    scorer, counter = _counting_scorer(tiny, layout=layout)
    for n in (1, 4, 10):
        counter.calls.clear()
        scorer(_batch(rating_rows[:n]))
        # One batched call; sample-first tokenizes each row's shared prefix once and the K suffixes once.
        want = n * len(RATING_PROMPTS) if layout == "paper" else n + len(RATING_PROMPTS)
        assert counter.calls == [want]


def test_truncation_tokenizer_calls_do_not_grow_with_prompts_or_probes(tiny):
    k = len(RATING_PROMPTS)
    for layout in ("paper", "sample-first"):
        scorer, counter = _counting_scorer(tiny, layout=layout, max_length=110)
        for n in (1, 4, 8):
            rows = [(row[0], row[1], row[2][: 300 + 100 * i]) for i, row in enumerate((LONG_ROWS * 2)[:n])]
            counter.calls.clear()
            out = scorer(_batch(rows))
            assert out["truncated"].all()
            # Every response far longer than the context: the responses (with offsets), the prompts
            # with an empty response, then a few rounds of probes, each one call of at most two
            # probes per (row, prompt) pair (each distinct text once), whatever the number of rows
            # and the response lengths; the whole prompts are never tokenized (a tokenizer call per
            # prompt and probe, as before, makes K x rows x log2(characters): hundreds).
            assert len(counter.calls) <= 6, counter.calls
            assert counter.calls[0] == n and counter.calls[1] <= (n * k if layout == "paper" else n + k)
            assert all(c <= 2 * n * k + k for c in counter.calls[2:])
            assert not any(row[2] in t for t in counter.backend_tokenizer.texts for row in rows)
            counter.backend_tokenizer.texts.clear()


def test_backend_rating_probs_ids_skips_the_tokenizer(tiny, rating_rows, prompts_for):
    scorer, counter = _counting_scorer(tiny)
    prompts = prompts_for(rating_rows[:3], "sample-first")
    split = scorer.backend.encode_batch(prompts)
    assert len(counter.calls) == 1
    got = scorer.backend.rating_probs_ids(split).probs
    assert len(counter.calls) == 1
    np.testing.assert_allclose(got, scorer.backend.rating_probs(prompts).probs, atol=1e-12, rtol=0)
    # A backend whose model adds BOS: same ids through encode_batch as by hand.
    bos = SelectITScorer(dataclasses.replace(tiny.loaded, add_bos=True), layout="sample-first").backend
    assert bos.encode_batch(prompts) == [_reference_ids(bos, p) for p in prompts]
