"""Facts about a loaded or saved model: parameter counts, context length, tokenizer behaviour."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from selectray.errors import ConfigError


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

