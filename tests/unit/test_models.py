"""Model specs, fingerprints, the converted-model cache and parameter counts."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, normalizers
from tokenizers.models import Unigram
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import selectray.models as models
from selectray.errors import ConfigError
from selectray.models import gguf


def _tiny_llama_dir(path, hidden=32, tie=True):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tie,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    return model


def test_unknown_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="built-in"):
        models.resolve_model("no-such-model")
    with pytest.raises(ConfigError):
        models.resolve_model(str(tmp_path))  # a directory without config.json


def test_builtin_specs_resolve_without_loading():
    smol = models.resolve_model("smollm2-135m")
    assert smol.kind == "gguf" and smol.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol.path.is_file()
    gemma = models.resolve_model("gemma3-270m")
    assert gemma.kind == "gguf" and gemma.sha256  # its known hash: no file to hash at start-up
    assert models.model_fingerprint("gemma3-270m").startswith("gguf-")


def test_hf_dir_fingerprint_is_stable_and_tracks_content(tmp_path):
    model = _tiny_llama_dir(tmp_path)
    fp = models.model_fingerprint(str(tmp_path))
    assert fp.startswith("hf-") and fp == models.model_fingerprint(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps") != 1e-5 else 1e-6
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert models.model_fingerprint(str(tmp_path)) != fp
    # Tied embeddings are stored once: the count on disk equals the module's.
    assert models.count_parameters_on_disk(tmp_path) == models.count_parameters(model)


def test_cache_root_argument_env_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SELECTRAY_CACHE", raising=False)
    assert models.cache_root() == Path.home() / ".cache" / "selectray"
    monkeypatch.setenv("SELECTRAY_CACHE", str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env"
    assert models.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_half_written_cache_entries_are_not_trusted(tmp_path):
    fp = "gguf-0123456789abcdef0123"
    entry = tmp_path / "models" / fp
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")
    assert models.cached_model_dir(fp, tmp_path) is None  # no marker: interrupted conversion
    (entry / models.MARKER).write_text(json.dumps({"format": models.CACHE_FORMAT, "fingerprint": "gguf-other"}))
    assert models.cached_model_dir(fp, tmp_path) is None  # marker of another model
    (entry / models.MARKER).write_text(json.dumps({"format": models.CACHE_FORMAT, "fingerprint": fp}))
    assert models.cached_model_dir(fp, tmp_path) == entry


def test_sentencepiece_bpe_ranks_become_a_bpe_model():
    # Scores are merge ranks (as in Gemma 3's GGUF): read as Unigram log-probabilities they
    # favour fragments ("▁" + "t" + "he": -10 beats "▁the": -20); as BPE merges (he, then ▁t,
    # then ▁the) they rebuild the word.
    pieces = [("<unk>", -1000.0), ("t", -1.0), ("h", -2.0), ("e", -3.0), ("▁", -4.0), ("he", -5.0), ("▁t", -6.0), ("▁the", -20.0)]
    backend = Tokenizer(Unigram(pieces, unk_id=0, byte_fallback=False))
    backend.normalizer = normalizers.Replace(" ", "▁")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert tok.tokenize(" the") == ["▁", "t", "he"]
    gguf._spm_bpe_from_ranks(tok)
    assert tok.tokenize(" the") == ["▁the"] and tok.convert_tokens_to_ids(["▁the"]) == [7]
    assert tok.tokenize(" he") == ["▁", "he"]


@pytest.mark.slow
def test_gguf_is_converted_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    first = models.load_model("smollm2-135m", device="cpu", cache_dir=tmp_path)
    assert first.source == "gguf"
    entry = tmp_path / "models" / first.fingerprint
    assert first.path == entry
    marker = json.loads((entry / models.MARKER).read_text())
    assert marker["fingerprint"] == first.fingerprint and marker["params"] == first.params == 134_515_008
    assert not [p for p in entry.parent.iterdir() if ".tmp-" in p.name]  # no leftover temp dirs

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was converted again instead of read from the cache")

    monkeypatch.setattr(gguf, "_convert_gguf", no_conversion)
    second = models.load_model("smollm2-135m", device="cpu", cache_dir=tmp_path)
    assert second.source == "cache" and second.fingerprint == first.fingerprint
    print(f"\nSmolLM2 load: converting {first.load_seconds:.1f} s, from the cache {second.load_seconds:.1f} s")
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    text = "Instruction: Write a haiku.\nResponse: Leaves fall.\nThe answer is: "
    assert first.tokenizer.encode(text) == second.tokenizer.encode(text)
    assert second.add_bos is False and second.tokenizer.eos_token == "<|im_end|>"  # GGUF metadata: eos id 2
    assert models.count_parameters_on_disk(entry) == second.params
