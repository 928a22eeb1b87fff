"""Shared fixtures: one local Ray per test session, offline Hugging Face, small pools, small models.

Layout: `unit/` (no Ray: pure cores, models called directly), `ray/` (parts on the
session's local Ray), `e2e/` (whole runs and the command line), `gpu/` (CUDA only).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

# What examples/make_pool.py plants in examples/pool.jsonl: 5 empty instructions, 6
# missing outputs, 5 reused ids, 4 overlong rows, 1 number as instruction, 1 line of
# broken UTF-8, 1 broken JSON line.
PLANTED = {"empty_instruction": 5, "duplicate_id": 5, "too_long": 4, "bad_type": 1, "bad_encoding": 1, "bad_json": 1}


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray shared by every test that needs one (started once, on first use)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def demo_pool() -> dict:
    """The demo pool: its path, line count and the reject reasons planted in it."""
    path = ROOT / "examples" / "pool.jsonl"
    lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return {"path": path, "lines": lines, "planted": dict(PLANTED)}


@pytest.fixture(scope="session")
def write_jsonl():
    def write(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


@pytest.fixture(scope="session")
def clean_rows() -> list[dict]:
    """120 valid rows from the demo generator (varied domains and lengths)."""
    from make_pool import make_rows

    return make_rows(120, seed=5)


@pytest.fixture(scope="session")
def make_cfg(demo_pool):
    """make_cfg(tmp_path, **overrides): a RunConfig on the demo pool with the hash embedder, 10 %."""
    from selectray.config import parse_config

    def make(tmp_path: Path, **over):
        base = {"input": str(demo_pool["path"]), "output": str(tmp_path / "out"), "embed": {"model": "hash"},
                "ray": {"progress": False}, "proportion": 0.1}
        for k, v in over.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return parse_config(base)

    return make


# ----- rater models: the real SmolLM2 and tiny random-weight models on its tokenizer ----------

RATING_ROWS = [
    ("Write a haiku about autumn.", "", "Leaves drift to the ground\nCrisp air hums through empty trees\nThe year exhales slow"),
    ("What is 2 + 2?", "", "5"),
    ("Translate the sentence into French.", "Good morning, how are you?", "Bonjour, comment allez-vous ?"),
    ("Explain photosynthesis in one sentence.", "", "Plants turn sunlight, water and carbon dioxide into sugar and oxygen."),
    ("List three prime numbers.", "", "banana"),
    ("Summarize the text.", "The meeting moved to Tuesday because the room was booked on Monday.", "The meeting is now on Tuesday."),
    ("Give a synonym for 'happy'.", "", "Joyful."),
    ("Write a Python function that returns the square of x.", "", "def square(x):\n    return x * x"),
    ("Name the capital of Japan.", "", "The capital of Japan is Tokyo, a city of about fourteen million people."),
    ("Is the earth flat?", "", "Yes, obviously, everyone knows that."),
]


@pytest.fixture(scope="session")
def rating_rows() -> list[tuple[str, str, str]]:
    """Ten (instruction, input, output) rows, good and bad responses."""
    return list(RATING_ROWS)


@pytest.fixture(scope="session")
def prompts_for():
    """prompts_for(rows, layout): every row's K rating prompts, row-major."""
    from selectray.prompts import RATING_PROMPTS, build_rating_prompt

    return lambda rows, layout: [build_rating_prompt(rp, *row, layout) for row in rows for rp in RATING_PROMPTS]


@pytest.fixture(scope="session")
def reference_probs():
    """reference_probs(backend, prompts): one prompt per forward pass over the full sequence,
    full-vocabulary logits, float64 softmax at the last position: the obviously correct way."""
    import numpy as np
    import torch

    @torch.inference_mode()
    def ref(backend, prompts):
        tok, out = backend.tokenizer, []
        for prefix, suffix in prompts:
            ids = [tok.bos_token_id] if backend.add_bos else []
            ids += tok.encode(prefix, add_special_tokens=False) if prefix else []
            ids += tok.encode(suffix, add_special_tokens=False)
            logits = backend.model(input_ids=torch.tensor([ids], device=backend.device)).logits[0, -1].double()
            out.append(torch.softmax(logits, -1)[list(backend.rating.ids)].cpu().numpy())
        return np.array(out)

    return ref


@pytest.fixture(scope="session")
def smol():
    """The real SmolLM2-135M-Instruct (bundled), on the CPU."""
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend("smollm2-135m", device="cpu", batch_size=8)


def _sharpen(model, rating_ids, factor):
    # Random weights spread the next-token mass over the whole vocabulary (~2e-5 each);
    # larger output rows for the rating tokens give them probabilities that vary a lot
    # between prompts, so the comparisons are not trivially within tolerance. (The
    # embeddings are untied so that the input side stays at its usual scale.)
    import torch

    with torch.no_grad():
        model.get_output_embeddings().weight[list(rating_ids)] *= factor
    return model


def _save(model, tokenizer, path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(smol, tmp_path_factory) -> str:
    """A 2-layer random Llama on SmolLM2's real tokenizer (the digits are single tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(smol.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = _sharpen(LlamaForCausalLM(cfg), smol.rating.ids, 60)
    return _save(model, smol.tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_llama_dir):
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend(tiny_llama_dir, device="cpu", batch_size=6, max_batch_tokens=600)


@pytest.fixture(scope="session")
def tiny_gemma(smol, tmp_path_factory):
    """A 2-layer random Gemma 3 with sliding-window layers (window shorter than most prompts)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from selectray.backends.transformers import TransformersBackend

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(
        vocab_size=len(smol.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=24,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    path = _save(_sharpen(Gemma3ForCausalLM(cfg), smol.rating.ids, 20), smol.tokenizer, tmp_path_factory.mktemp("tiny-gemma"))
    return TransformersBackend(path, device="cpu", batch_size=10)


@pytest.fixture(scope="session")
def gemma():
    """The real Gemma-3-270M (bundled), on the CPU."""
    from selectray.backends.transformers import TransformersBackend

    return TransformersBackend("gemma3-270m", device="cpu", batch_size=8)
