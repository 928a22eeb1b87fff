"""Inference backends: prompts in, rating probabilities or completions out.

`base.RaterBackend` is the interface (and the token-level logic both share);
``transformers`` runs in this process on the CPU or CUDA, ``vllm`` on a GPU (extra
``selectray[gpu]``). The same objects serve the SelectIT score stage and the Ray Serve
rater app.
"""

from __future__ import annotations

from selectray.backends.base import (
    BACKENDS,
    Completion,
    Prompt,
    RaterBackend,
    RatingProbs,
    truncate_at_stop,
)
from selectray.errors import ConfigError

__all__ = ["BACKENDS", "Completion", "Prompt", "RaterBackend", "RatingProbs", "make_backend", "truncate_at_stop"]


def make_backend(name: str, model: str, **options) -> RaterBackend:
    """Create a backend by name ("transformers" or "vllm") for a model spec.

    ``options`` go to the backend's constructor (device, dtype, batch_size, max_length,
    cache_dir, ... see each backend). The vllm backend needs ``pip install 'selectray[gpu]'``.
    """
    match name:
        case "transformers":
            from selectray.backends.transformers import TransformersBackend

            return TransformersBackend(model, **options)
        case "vllm":
            from selectray.backends.vllm import VLLMBackend

            return VLLMBackend(model, **options)
        case _:
            raise ConfigError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")


def engine_options(spec) -> dict:
    """The vLLM engine options of a model entry (`settings.ModelSpec`); none for transformers."""
    if spec.backend != "vllm":
        return {}
    return {"gpu_memory_utilization": spec.gpu_memory_utilization, "enable_prefix_caching": spec.enable_prefix_caching,
            "tensor_parallel_size": spec.tensor_parallel_size, "quantization": spec.quantization}


def backend_kwargs(spec) -> dict:
    """`make_backend` keyword arguments for a model entry: batch size, dtype, context, engine options."""
    return {"batch_size": spec.batch_size, "dtype": None if spec.dtype == "auto" else spec.dtype,
            "max_length": spec.max_model_len, **engine_options(spec)}
