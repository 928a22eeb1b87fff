"""Rater models: specs and fingerprints (`specs`), hub ids pinned to commits (`hub`), GGUF
conversion and its cache (`gguf`), model facts (`info`), loading with transformers (`load`)."""

from selectray.models.gguf import (
    CACHE_FORMAT,
    MARKER,
    cache_root,
    cached_model_dir,
    prepare_model_dir,
)
from selectray.models.hub import HubRef, parse_hub_id
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
    BUNDLED_EMBEDDERS,
    ModelSource,
    file_digest,
    model_fingerprint,
    pin_models,
    resolve_model,
)

__all__ = [
    "BUILTIN_MODELS", "BUNDLED_EMBEDDERS", "CACHE_FORMAT", "MARKER", "HubRef", "LoadedModel", "ModelSource",
    "cache_root", "cached_model_dir", "context_length_of", "count_parameters", "count_parameters_on_disk",
    "file_digest", "load_model", "load_tokenizer", "model_fingerprint", "parse_hub_id", "pin_models",
    "prepare_model_dir", "resolve_device", "resolve_model", "tokenizer_adds_bos",
]
