"""Rater models: specs and fingerprints (`specs`), GGUF conversion and its cache (`gguf`),
model facts (`info`), loading with transformers (`load`)."""

from selectray.models.gguf import (
    CACHE_FORMAT,
    MARKER,
    cache_root,
    cached_model_dir,
    prepare_model_dir,
)
from selectray.models.info import (
    context_length_of,
    count_parameters,
    count_parameters_on_disk,
    load_tokenizer,
    tokenizer_adds_bos,
)
from selectray.models.load import LoadedModel, load_model, resolve_device
from selectray.models.specs import (
    BUILTIN_MODELS,
    ModelSource,
    file_digest,
    model_fingerprint,
    resolve_model,
)

__all__ = [
    "BUILTIN_MODELS", "CACHE_FORMAT", "MARKER", "LoadedModel", "ModelSource", "cache_root", "cached_model_dir",
    "context_length_of", "count_parameters", "count_parameters_on_disk", "file_digest", "load_model",
    "load_tokenizer", "model_fingerprint", "prepare_model_dir", "resolve_device", "resolve_model",
    "tokenizer_adds_bos",
]
