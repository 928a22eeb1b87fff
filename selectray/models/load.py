"""Loading a model spec for inference with transformers (converting and caching GGUF files)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selectray.models.gguf import prepare_model_dir
from selectray.models.info import (
    context_length_of,
    count_parameters,
    load_tokenizer,
    tokenizer_adds_bos,
)


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

