"""The exact requests selectray builds for vLLM, checked without vLLM (it runs on GPU clusters only)."""

import pytest

from selectray.backends import backend_kwargs, engine_options
from selectray.backends.vllm import (
    completion_sampling,
    engine_args,
    rating_from_logprobs,
    rating_sampling,
    token_prompts,
)
from selectray.settings import ModelSpec


def test_rating_request_asks_for_exactly_the_five_rating_tokens():
    assert rating_sampling((33, 34, 35, 36, 37)) == {
        "max_tokens": 1, "temperature": 0.0, "logprob_token_ids": [33, 34, 35, 36, 37], "detokenize": False}
    assert token_prompts([[1, 2, 3], (4,)]) == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4]}]


def test_rating_probabilities_come_from_the_first_generated_position():
    class Logprob:
        def __init__(self, lp):
            self.logprob = lp

    step = {33: Logprob(-1.0), 34: Logprob(-2.0), 35: Logprob(-0.5), 36: Logprob(-3.0), 37: Logprob(-4.0), 99: Logprob(-0.1)}
    import math

    assert rating_from_logprobs(step, [33, 34, 35, 36, 37]) == [math.exp(v) for v in (-1.0, -2.0, -0.5, -3.0, -4.0)]


def test_completion_request():
    assert completion_sampling(8, 0.0, ["]"], None, 7) == {
        "max_tokens": 8, "temperature": 0.0, "stop": ["]"], "logprobs": None, "seed": 7}
    assert completion_sampling(4, 0.7, None, 2, None)["stop"] is None


def test_engine_arguments_from_a_model_entry():
    spec = ModelSpec(name="org/model", backend="vllm", tensor_parallel_size=2, quantization="awq", dtype="bfloat16",
                     gpu_memory_utilization=0.7, enable_prefix_caching=False, max_model_len=4096)
    kw = backend_kwargs(spec)
    assert kw == {"batch_size": 8, "dtype": "bfloat16", "max_length": 4096, "gpu_memory_utilization": 0.7,
                  "enable_prefix_caching": False, "tensor_parallel_size": 2, "quantization": "awq"}
    args = engine_args("/models/m", 4096, dtype=kw["dtype"], **engine_options(spec))
    assert args == {"model": "/models/m", "tokenizer": "/models/m", "dtype": "bfloat16", "max_model_len": 4096,
                    "gpu_memory_utilization": 0.7, "enable_prefix_caching": False, "tensor_parallel_size": 2,
                    "seed": 0, "distributed_executor_backend": "mp", "quantization": "awq"}
    # One GPU: no executor override, no quantization key; "auto" dtype passes through.
    one = engine_args("/m", 2048, **engine_options(ModelSpec(name="m", backend="vllm")))
    assert one["tensor_parallel_size"] == 1 and "distributed_executor_backend" not in one and "quantization" not in one
    assert one["dtype"] == "auto" and one["enable_prefix_caching"] is True


def test_engine_options_are_validated_and_reserve_gpus():
    with pytest.raises(ValueError, match="tensor_parallel_size needs backend 'vllm'"):
        ModelSpec(name="m", tensor_parallel_size=2)
    with pytest.raises(ValueError, match="quantization needs backend 'vllm'"):
        ModelSpec(name="m", quantization="awq")
    with pytest.raises(ValueError, match="less than tensor_parallel_size"):
        ModelSpec(name="m", backend="vllm", tensor_parallel_size=4, num_gpus=2)
    with pytest.raises(ValueError):
        ModelSpec(name="m", gpu_memory_utilization=1.5)
    tp = ModelSpec(name="m", backend="vllm", tensor_parallel_size=4)
    assert tp.resources().gpus(True) == 4 and tp.resources().gpus(False) == 0
    assert ModelSpec(name="m", num_gpus=0.25).resources().gpus(True) == 0.25
    assert engine_options(ModelSpec(name="m")) == {}
