"""Embedders, called directly (no Ray): the real MiniLM and the hash embedder."""

import numpy as np
import pyarrow as pa
import pytest

from selectray.errors import ConfigError
from selectray.stages.embed import Embedder, HashEncoder, embedding_text, resolve_embedder


def _batch(instructions, inputs=None):
    n = len(instructions)
    return pa.table({"id": [f"r{i}" for i in range(n)], "pos": list(range(n)),
                     "instruction": instructions, "input": inputs or [None] * n})


def test_template():
    assert embedding_text("Do X.", None) == "Do X."
    assert embedding_text("Do X.", "") == "Do X."
    assert embedding_text("Do X.", "with this") == "Do X.\n\nwith this"


@pytest.mark.slow
def test_minilm_vectors_are_unit_length_and_semantic():
    emb = Embedder(resolve_embedder("all-MiniLM-L6-v2"), "instruction", "input")
    out = emb(_batch(["How do I bake banana bread?", "Give me a recipe for banana bread.",
                      "Explain how black holes form."]))
    v = np.asarray(out["embedding"].to_pylist(), dtype=np.float32)
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrases are far closer than an unrelated topic
    assert out["id"].to_pylist() == ["r0", "r1", "r2"] and out["pos"].to_pylist() == [0, 1, 2]


@pytest.mark.slow
def test_minilm_batch_equals_one_at_a_time():
    emb = Embedder(resolve_embedder("all-MiniLM-L6-v2"), "instruction", "input", encode_batch_size=4)
    texts = ["short", "a much longer instruction with many more words in it than the others", "mid length one"] * 3
    batched = np.asarray(emb(_batch(texts))["embedding"].to_pylist())
    single = np.concatenate([np.asarray(emb(_batch([t]))["embedding"].to_pylist()) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_hash_embedder_is_deterministic_normalised_and_float16_capable():
    a = Embedder("hash", "instruction", "input", hash_dim=64)
    b = Embedder("hash", "instruction", "input", hash_dim=64, dtype="float16")
    batch = _batch(["sort a list in python", "sort a list in python quickly", "history of rome"], ["", "", "x"])
    va = np.asarray(a(batch)["embedding"].to_pylist())
    vb = np.asarray(b(batch)["embedding"].to_pylist())
    assert va.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(va, vb, atol=2e-3)
    assert b(batch)["embedding"].type.value_type == pa.float16()
    np.testing.assert_array_equal(va, np.asarray(Embedder("hash", "instruction", "input", hash_dim=64)(batch)["embedding"].to_pylist()))
    assert va[0] @ va[1] > va[0] @ va[2]  # shared words, closer vectors


def test_hash_encoder_projection_is_seeded():
    x = HashEncoder(dim=16, seed=1).encode(["alpha beta gamma"])
    assert np.array_equal(x, HashEncoder(dim=16, seed=1).encode(["alpha beta gamma"]))
    assert not np.array_equal(x, HashEncoder(dim=16, seed=2).encode(["alpha beta gamma"]))


MASK = (1 << 64) - 1


def _mix(h: int) -> int:
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & MASK
    return h ^ (h >> 29)


def _reference_hash_vectors(texts, dim, n_features, seed):
    """The hash embedder's rule with Python ints, one word at a time (see HashEncoder's docstring)."""
    from selectray.stages.embed import PUNCTUATION

    proj = np.random.default_rng(seed).standard_normal((n_features, dim), dtype=np.float32) / np.sqrt(dim)
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for r, text in enumerate(texts):
        words = [w.strip(PUNCTUATION) for w in text.lower().split()]
        hashes = []
        for w in (w for w in words if len(w) >= 2):
            acc = 0
            for j, b in enumerate(w.encode()):
                acc = (acc + (b + 1) * _mix((j + 0x9E3779B97F4A7C15) & MASK)) & MASK
            hashes.append(_mix(acc))
        hashes += [_mix((a * 0x9E3779B97F4A7C15 + b) & MASK) for a, b in zip(hashes, hashes[1:])]
        for h in hashes:
            out[r] += (-1.0 if h >> 63 else 1.0) * proj[h % n_features]
    return out


def test_hash_encoder_equals_a_word_by_word_reference():
    texts = ["Alpha, beta; GAMMA!", "a b c", "", "   ", "Schönen Tag — ça va? 👍🏽 naïve café", "x\ty\nzz (zz) zz.",
             "repeat repeat repeat", "The quick brown fox jumps over the lazy dog " * 20, "«quoted» and [bracketed]"]
    enc = HashEncoder(dim=24, n_features=512, seed=3)
    got = enc.encode(texts)
    np.testing.assert_allclose(got, _reference_hash_vectors(texts, 24, 512, 3), rtol=1e-5, atol=1e-5)
    assert not got[1].any() and not got[2].any()  # no word of two characters: a zero vector
    # One row's vector does not depend on the batch it is encoded in.
    np.testing.assert_allclose(enc.encode(texts[4:5])[0], got[4], rtol=1e-6, atol=1e-6)


def test_missing_column_is_named():
    emb = Embedder("hash", "prompt", None)
    with pytest.raises(Exception, match="'prompt'"):
        emb(_batch(["x"]))


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="not-a-model"):
        resolve_embedder("not-a-model")
