"""CUDA paths against the CPU paths on the same inputs, and vLLM against transformers
(skipped without a CUDA GPU; the vLLM test also needs `pip install '.[gpu]'`)."""

import importlib.util

import numpy as np
import pyarrow as pa
import pytest
import torch

from selectray.backends import make_backend
from selectray.backends.transformers import TransformersBackend
from selectray.kcenter import greedy_k_center
from selectray.prompts import RATING_PROMPTS, build_rating_prompt
from selectray.stages.embed import Embedder, resolve_embedder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ROWS = [
    ("Write a haiku about autumn.", "", "Leaves drift to the ground\nCrisp air hums through empty trees"),
    ("What is 2 + 2?", "", "5"),
    ("Translate the sentence into French.", "Good morning, how are you?", "Bonjour, comment allez-vous ?"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    # TF32 matmuls would make CUDA differ from the CPU by ~1e-3 relative.
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_transformers_cuda_rating_probs_equal_cpu():
    prompts = [build_rating_prompt(rp, *row, layout) for layout in ("paper", "sample-first")
               for row in ROWS for rp in RATING_PROMPTS]
    cpu = TransformersBackend("smollm2-135m", device="cpu", dtype="float32", batch_size=4)
    gpu = TransformersBackend("smollm2-135m", device="cuda", dtype="float32", batch_size=4)
    a, b = cpu.rating_probs(prompts), gpu.rating_probs(prompts)
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
    np.testing.assert_allclose(b.other, a.other, atol=1e-4)
    (c,) = cpu.complete(["The capital of France is"], max_tokens=4)
    (d,) = gpu.complete(["The capital of France is"], max_tokens=4)
    assert c.token_ids == d.token_ids


def test_kcenter_on_cuda_equals_numpy():
    rng = np.random.default_rng(5)
    means = rng.standard_normal((8, 32)) * 4
    x = (means[rng.integers(0, 8, 5000)] + rng.standard_normal((5000, 32)) * 0.3).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[7] = np.nan  # rejected on both paths
    ref = greedy_k_center(x, 120, lookahead=64, device="numpy")
    ours = greedy_k_center(x, 120, lookahead=64, device="cuda")
    np.testing.assert_array_equal(ours.centers, ref.centers)
    np.testing.assert_array_equal(ours.radii, ref.radii)
    assert ours.rejected == ref.rejected
    np.testing.assert_allclose(ours.distance, ref.distance, atol=1e-5, equal_nan=True)


def test_minilm_on_cuda_equals_cpu():
    texts = ["How do I bake banana bread?", "Explain how black holes form.", "short"] * 4
    batch = pa.table({"id": [f"r{i}" for i in range(len(texts))], "pos": list(range(len(texts))),
                      "instruction": texts, "input": [None] * len(texts)})
    path = resolve_embedder("all-MiniLM-L6-v2")
    cpu = np.asarray(Embedder(path, "instruction", "input", device="cpu")(batch)["embedding"].to_pylist())
    gpu = np.asarray(Embedder(path, "instruction", "input", device="cuda")(batch)["embedding"].to_pylist())
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (pip install '.[gpu]')")
def test_vllm_probabilities_match_transformers(rating_rows, prompts_for):
    vllm_backend = make_backend("vllm", "smollm2-135m", dtype="float32", gpu_memory_utilization=0.3)
    hf = TransformersBackend("smollm2-135m", device="cuda", dtype="float32")
    for layout in ("paper", "sample-first"):
        prompts = prompts_for(rating_rows, layout)
        a, b = vllm_backend.rating_probs(prompts), hf.rating_probs(prompts)
        np.testing.assert_allclose(a.probs, b.probs, atol=2e-3)
        np.testing.assert_allclose(a.other, b.other, atol=5e-3)
    assert vllm_backend.params == hf.params and vllm_backend.rating.ids == hf.rating.ids
    (c,) = vllm_backend.complete(["The capital of France is"], max_tokens=4)
    (d,) = hf.complete(["The capital of France is"], max_tokens=4)
    assert c.token_ids == d.token_ids
