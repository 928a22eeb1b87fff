"""Rating prompts, layouts and the rating-token lookup (small tokenizers built here)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from selectray.errors import ConfigError
from selectray.prompts import (
    RATING_PROMPTS,
    RatingTokenError,
    adapt_to_tokens,
    build_rating_prompt,
    check_rating_prompts,
    find_rating_tokens,
)


def test_paper_layout_text():
    prefix, suffix = build_rating_prompt("Rate it.", "Add 2 and 2.", "", "4", "paper")
    assert prefix == ""
    assert suffix == "Rate it.\nInstruction: Add 2 and 2.\nResponse: 4\nThe answer is: "
    _, with_input = build_rating_prompt("Rate it.", "Translate.", "Guten Tag", "Good day", "paper")
    assert with_input == "Rate it.\nInstruction: Translate.\nGuten Tag\nResponse: Good day\nThe answer is: "


def test_sample_first_layout_shares_the_row_prefix():
    pairs = [build_rating_prompt(rp, "Translate.", "Guten Tag", "Good day", "sample-first") for rp in RATING_PROMPTS]
    assert {p for p, _ in pairs} == {"Instruction: Translate.\nGuten Tag\nResponse: Good day\n"}
    assert pairs[0][1] == RATING_PROMPTS[0] + "\nThe answer is: "
    with pytest.raises(ConfigError, match="layout"):
        build_rating_prompt("x", "i", "", "o", "answer-first")


def test_default_prompts_and_validation():
    assert len(RATING_PROMPTS) == 5 and len(set(RATING_PROMPTS)) == 5
    assert all("1" in p and "5" in p for p in RATING_PROMPTS)
    assert check_rating_prompts(None) == RATING_PROMPTS
    assert check_rating_prompts(["a", "b"]) == ("a", "b")
    for bad in ([], ["a", ""], ["a", "a"]):
        with pytest.raises(ConfigError):
            check_rating_prompts(bad)


def _chars(extra="", digits=True):
    return sorted(set("Theanswris: " + extra + ("12345" if digits else "")))


def _fast(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _char_tokenizer(digits=True, normalizer=None) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(_chars("onetwhfiv", digits))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    if normalizer is not None:
        tok.normalizer = normalizer
    return _fast(tok)


def test_bare_digits_after_a_space_token():
    tok = _char_tokenizer()
    rating = find_rating_tokens(tok)
    assert rating.form == "bare" and not rating.strip_cue_space
    assert rating.ids == tuple(tok.convert_tokens_to_ids(list("12345")))
    assert adapt_to_tokens("The answer is: ", rating) == "The answer is: "


def test_spaced_digits_drop_the_cue_space():
    # GPT-2 style: the space is merged into the digit ("Ġ1"), a trailing space is a lone "Ġ".
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(sorted(alphabet))}}
    merges = [("Ġ", d) for d in "12345"]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast = _fast(tok)
    rating = find_rating_tokens(fast)
    assert rating.form == "spaced" and rating.strip_cue_space
    assert rating.ids == tuple(vocab["Ġ" + d] for d in "12345")
    assert adapt_to_tokens("Rate.\nThe answer is: ", rating) == "Rate.\nThe answer is:"
    # The adapted prompt followed by rating i is exactly the prompt's tokens + ids[i].
    base = fast.encode("The answer is:", add_special_tokens=False)
    assert fast.encode("The answer is: 3", add_special_tokens=False) == base + [rating.ids[2]]


def test_tokenizer_without_digit_tokens_is_a_clear_error():
    with pytest.raises(RatingTokenError, match="cannot express the ratings 1..5 as single tokens"):
        find_rating_tokens(_char_tokenizer(digits=False))  # digits are [UNK]


def test_tokenizer_with_multi_token_digits_is_a_clear_error():
    spell = normalizers.Sequence([normalizers.Replace(d, w) for d, w in zip("12345", ["one", "two", "three", "four", "five"], strict=True)])
    with pytest.raises(RatingTokenError, match="single tokens"):
        find_rating_tokens(_char_tokenizer(normalizer=spell))
