"""GGUF models through transformers: conversion, tokenizer fix-ups, and the on-disk cache of converted models.

GGUF files are converted by transformers (``gguf_file=``, weights dequantized to float32),
which is slow (SmolLM2 ~10 s, Gemma 3 ~35 s, mostly the tokenizer). The converted model is
saved once under ``<cache root>/models/<fingerprint>/`` and later loads read that directory
(sub-second to a few seconds). The cache root is the ``cache_dir`` argument, else
``$SELECTRAY_CACHE``, else ``~/.cache/selectray``. A cache entry is written to a temporary
directory and renamed into place (a local cache, not run output), and is trusted only when
its marker file (``selectray-model.json``) is present and names the same fingerprint and format.

Fix-ups of GGUF-converted tokenizers (all found with transformers 5.17 on the two
embedded models):

* BOS/EOS/PAD tokens are set from the GGUF metadata (SmolLM2's came out with
  ``<|im_start|>`` as EOS) and a BOS is added when the metadata says
  ``tokenizer.ggml.add_bos_token`` (Gemma expects ``<bos>``; the converted tokenizer does
  not add it);
* a SentencePiece vocabulary whose scores are BPE merge ranks (``tokenizer.ggml.model ==
  "llama"`` with integral scores, as Gemma 3's) is rebuilt as a BPE model with merges
  derived from those ranks, which is how SentencePiece-BPE and llama.cpp tokenize;
  transformers turns it into a Unigram model that splits words into fragments
  ("▁t", "he" for "▁the"), about twice as many tokens as Gemma was trained on;
* the saved tokenizer is declared as the generic ``TokenizersBackend``, because reloading
  Gemma's as ``GemmaTokenizer`` rebuilds an empty BPE model (one token per character).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from selectray.errors import ConfigError
from selectray.models.hub import download
from selectray.models.info import count_parameters, load_tokenizer
from selectray.models.specs import ModelSource, gguf_path, model_fingerprint, resolve_model

MARKER = "selectray-model.json"
CACHE_FORMAT = 1
_PROBE = "Rate 1 to 5.\nInstruction: Ünïcode 日本語 🙂  two  spaces\ttab\n\nResponse: x = 42;\nThe answer is: "


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else $SELECTRAY_CACHE, else ~/.cache/selectray."""
    root = cache_dir or os.environ.get("SELECTRAY_CACHE") or Path.home() / ".cache" / "selectray"
    return Path(root).expanduser()


def cached_model_dir(fingerprint: str, cache_dir=None) -> Path | None:
    """The converted model's directory if a complete cache entry exists, else None."""
    d = cache_root(cache_dir) / "models" / fingerprint
    try:
        marker = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("fingerprint") != fingerprint or marker.get("format") != CACHE_FORMAT:
        return None
    return d



@contextlib.contextmanager
def _one_parse_per_file():
    """Within the block, every `gguf.GGUFReader(path)` of one file is the same parsed reader.

    transformers parses the GGUF file again for the config, the tokenizer and the weights, and
    gguf's pure-Python reader takes ~15 s for Gemma 3's 262k-token vocabulary: five parses were
    three quarters of a conversion (docs/methods.md, "Speed"). The readers are only read.
    """
    import gguf

    original, readers = gguf.GGUFReader, {}

    def reader(path, mode="r"):
        key = (os.path.realpath(str(path)), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _gguf_metadata(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for key in ("model", "add_bos_token", "bos_token_id", "eos_token_id", "padding_token_id"):
        f = reader.fields.get(f"tokenizer.ggml.{key}")
        if f is not None:
            out[key] = f.contents()
    return out


def _spm_bpe_from_ranks(tok) -> None:
    """Rebuild a Unigram model whose scores are BPE ranks as the BPE model it stands for."""
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import generate_merges

    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    if model.get("type") != "Unigram" or not all(float(s).is_integer() for _, s in model["vocab"]):
        return  # a real Unigram vocabulary (log-probability scores): keep it
    vocab = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    merges = generate_merges(vocab, {piece: score for piece, score in model["vocab"]})
    unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
    tok.backend_tokenizer.model = BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=bool(model.get("byte_fallback")))


def _fix_gguf_tokenizer(tok, meta: dict) -> None:
    if meta.get("model") == "llama":
        _spm_bpe_from_ranks(tok)
    for key, attr in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token"), ("padding_token_id", "pad_token")):
        if key in meta:
            setattr(tok, attr, tok.convert_ids_to_tokens(int(meta[key])))
    # The setter rebuilds the post-processor, which is saved in tokenizer.json.
    tok.add_bos_token = bool(meta.get("add_bos_token", False))


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_gguf(src: ModelSource, fingerprint: str, cache_dir) -> Path:
    """Convert a GGUF model with transformers and save it as a cache entry (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = gguf_path(src)
    kwargs = dict(gguf_file=gguf_file.name, local_files_only=True)
    with _one_parse_per_file():
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), **kwargs)
        meta = _gguf_metadata(gguf_file)
        _fix_gguf_tokenizer(tok, meta)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), **kwargs)
    # The weights are dequantized already; the GGUF quantizer object only blocks saving.
    model.hf_quantizer = None
    final = cache_root(cache_dir) / "models" / fingerprint
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fingerprint}.tmp-", dir=final.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["tokenizer_class"] = "TokenizersBackend"
        cfg["clean_up_tokenization_spaces"] = False  # it would alter decoded text of BPE tokenizers
        cfg_path.write_text(json.dumps(cfg, indent=2))
        reloaded = load_tokenizer(tmp)
        if reloaded(_PROBE).input_ids != tok(_PROBE).input_ids:
            raise RuntimeError(f"the converted tokenizer of {src.name} does not survive saving; not caching it")
        marker = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "source": str(gguf_file),
            "name": src.name,
            "params": count_parameters(model),
            "gguf_metadata": {k: (v if isinstance(v, (bool, int)) else str(v)) for k, v in meta.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        import transformers

        marker["transformers"] = transformers.__version__
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        if final.exists():  # an incomplete entry (no valid marker): replace it
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prepare_model_dir(spec: str, cache_dir=None) -> tuple[ModelSource, str, Path, str]:
    """A Hugging Face directory holding the model: ``(source, fingerprint, path, how)``.

    ``how`` is "dir" (an HF directory given as is), "hub" (a pinned hub model, downloaded
    on this node on first use), "cache" (a converted GGUF found in the cache) or "gguf"
    (converted now and cached). Concurrent callers (several Ray
    actors) convert once: the conversion holds a file lock and rechecks the cache.
    """
    src = resolve_model(spec)
    fp = model_fingerprint(src)
    if src.kind == "hf":
        return src, fp, src.path, "dir"
    if src.kind == "hub":
        path = download(src.hub)
        if not (path / "config.json").is_file():
            raise ConfigError(f"model '{spec}': the hub repository has no config.json (a transformers model is needed)")
        return src, fp, path, "hub"
    found = cached_model_dir(fp, cache_dir)
    if found is not None:
        return src, fp, found, "cache"
    with _lock(cache_root(cache_dir) / "models" / f".{fp}.lock"):
        found = cached_model_dir(fp, cache_dir)
        if found is not None:
            return src, fp, found, "cache"
        return src, fp, _convert_gguf(src, fp, cache_dir), "gguf"

