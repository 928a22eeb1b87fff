"""The run configuration: the stage sections (selectray.settings) and each method's own section
(selectray.methods), assembled from the method registry; loaded from YAML.

Every rule that spans settings is a validator here, so a wrong combination is a one-line
error before Ray starts. Relative paths are relative to the current working directory
(for `ray job submit --working-dir .` that is the job's working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from selectray.errors import ConfigError
from selectray.methods import METHODS
from selectray.settings import (
    ColumnsConfig,
    EmbedConfig,
    KCenterConfig,
    ModelSpec,
    RayConfig,
    ReadConfig,
    ReportConfig,
    Section,
    ServeConfig,
    WriteConfig,
)

__all__ = ["ConfigError", "ModelSpec", "RunConfig", "config_model", "load_config", "parse_config"]


class RunConfig(Section):
    """The top-level keys and the cross-section rules; `config_model()` adds the sections."""

    input: list[str] = Field(..., description="Input Parquet/JSONL files or folders of them: local paths or object-store URIs (s3://...).")
    output: str = Field("out", description="Output folder (created): a local path, a shared filesystem path or an object-store URI.")
    method: str = Field("random", description="Selection method (see `selectray run --help`).")
    budget: int | None = Field(None, gt=0, description="Rows to select; overrides proportion.")
    proportion: float = Field(0.2, gt=0, le=1, description="Share of usable rows to select when no budget is given.")
    seed: int = Field(0, description="Seed for every random choice of the run.")

    @model_validator(mode="before")
    @classmethod
    def _input_as_list(cls, data: Any):
        if isinstance(data, dict) and isinstance(data.get("input"), str):
            data = {**data, "input": [data["input"]]}
        return data

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method; valid: {', '.join(METHODS)}")
        return v

    @model_validator(mode="after")
    def _rules(self):
        method = METHODS[self.method]
        kc = self.kcenter
        if (kc.seeds or kc.seeds_file) and not method.takes_seeds:
            takes = [n for n, m in METHODS.items() if m.takes_seeds]
            raise ValueError(f"kcenter.seeds apply to method {' or '.join(takes)} only, not '{self.method}'")
        if kc.seeds_file and not Path(kc.seeds_file).is_file():
            raise ValueError(f"kcenter.seeds_file {kc.seeds_file} not found")
        sit = getattr(self, "selectit", None)
        if sit is not None:
            _unique([m.name for m in sit.models], "selectit.models")
            from selectray.prompts import check_rating_prompts

            check_rating_prompts(sit.prompts)
        sl = getattr(self, "selectllm", None)
        if sl is not None:
            if sl.picks > sl.candidates:
                raise ValueError(f"selectllm.picks ({sl.picks}) must not exceed selectllm.candidates ({sl.candidates})")
            served = self.serve.models
            if served is not None:
                _unique([m.name for m in served], "serve.models")
                if sl.url is None and sl.model.name not in {m.name for m in served}:
                    raise ValueError(f"selectllm.model '{sl.model.name}' is not among serve.models")
        return self

    @property
    def output_dir(self) -> Path:
        return Path(self.output)

    def budget_for(self, usable_rows: int) -> int:
        """Rows to select out of `usable_rows`: the budget, else round(proportion * usable), at least 1."""
        if self.budget is not None:
            return self.budget
        return max(1, round(self.proportion * usable_rows))


def _unique(names: list[str], where: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"{where} names must be unique, got {names}")


_SECTIONS_BEFORE = {
    "columns": (ColumnsConfig, "Column mapping."),
    "read": (ReadConfig, "Reading and validation."),
    "embed": (EmbedConfig, "Embedding stage."),
    "kcenter": (KCenterConfig, "Greedy k-center stage."),
}
_SECTIONS_AFTER = {
    "serve": (ServeConfig, "Ray Serve rater application."),
    "write": (WriteConfig, "Output files besides selected.parquet and rejected.parquet."),
    "report": (ReportConfig, "Report contents."),
    "ray": (RayConfig, "Ray connection."),
}
_built: dict[tuple, type[RunConfig]] = {}


def config_model() -> type[RunConfig]:
    """The RunConfig model for the methods registered now: stage sections, then each method's own."""
    sig = tuple((name, m.settings) for name, m in METHODS.items())
    if sig not in _built:
        method_sections = {m.name: (m.settings, _first_line(m.settings.__doc__) or m.summary)
                           for m in METHODS.values() if m.settings is not None}
        fields: dict[str, Any] = {}
        for name, (model, doc) in {**_SECTIONS_BEFORE, **method_sections, **_SECTIONS_AFTER}.items():
            fields[name] = (model, Field(default_factory=model, description=doc))
        _built[sig] = create_model("RunConfig", __base__=RunConfig, **fields)
    return _built[sig]


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


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
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return msg
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"'{where}': {msg} (got {shown})"


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a mapping into a RunConfig, raising ConfigError with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    model = config_model()
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"config: {_describe(first, model)}{more}") from None
    except ConfigError as e:  # raised by a checker the rules call (e.g. the rating prompts)
        raise ConfigError(f"config: {e}") from None


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
