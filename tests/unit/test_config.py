"""Config validation: unknown keys and wrong types are one-line errors naming the key."""

import pytest

from selectray.config import load_config, parse_config
from selectray.errors import ConfigError


def test_defaults_and_input_as_list():
    cfg = parse_config({"input": "pool.jsonl"})
    assert cfg.input == ["pool.jsonl"]
    assert cfg.method == "random" and cfg.proportion == 0.2 and cfg.embed.model == "all-MiniLM-L6-v2"


def test_unknown_top_level_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as e:
        parse_config({"input": "x", "budjet": 5})
    msg = str(e.value)
    assert "'budjet'" in msg and "budget" in msg and "proportion" in msg and "\n" not in msg


def test_unknown_nested_key_lists_that_sections_keys():
    with pytest.raises(ConfigError) as e:
        parse_config({"input": "x", "embed": {"modle": "hash"}})
    msg = str(e.value)
    assert "'embed.modle'" in msg and "model" in msg and "batch_size" in msg
    assert "budget" not in msg  # keys of the embed section, not the top level


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as e:
        parse_config({"input": "x", "embed": {"batch_size": "lots"}})
    assert "'embed.batch_size'" in str(e.value) and "'lots'" in str(e.value)


@pytest.mark.parametrize("bad", [{"proportion": 0}, {"proportion": 1.5}, {"budget": -3}, {"method": "best"}])
def test_out_of_range_values(bad):
    with pytest.raises(ConfigError):
        parse_config({"input": "x", **bad})


def test_budget_for():
    assert parse_config({"input": "x", "proportion": 0.1}).budget_for(567) == 57
    assert parse_config({"input": "x", "budget": 9}).budget_for(567) == 9
    assert parse_config({"input": "x", "proportion": 0.001}).budget_for(10) == 1


def test_yaml_file_with_dotted_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("input: a.jsonl\nembed:\n  model: hash\n")
    cfg = load_config(p, {"embed.batch_size": 7, "method": "length", "ray.num_cpus": 1})
    assert (cfg.embed.model, cfg.embed.batch_size, cfg.method, cfg.ray.num_cpus) == ("hash", 7, "length", 1)


def test_bad_yaml_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "not valid YAML" in str(e.value) and "line" in str(e.value)


def _keys(model, prefix=""):
    from pydantic import BaseModel

    from selectray.config import ModelSpec

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not ModelSpec:
            yield from _keys(ann, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_readme_documents_every_config_key():
    """The README's config reference must not drift from the config models."""
    from pathlib import Path

    from selectray.config import ModelSpec, config_model

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [k for k in [*_keys(config_model()), *_keys(ModelSpec)] if f"| `{k}` |" not in readme]
    assert not missing, f"README config reference lacks {missing}"


@pytest.mark.parametrize("bad,needle", [
    ({"kcenter": {"seeds": ["a"]}, "method": "random"}, "kcenter.seeds apply to method kcenter only"),
    ({"method": "selectllm", "selectllm": {"picks": 11, "candidates": 10}}, "must not exceed selectllm.candidates"),
    ({"selectit": {"models": [{"name": "m"}, {"name": "m"}]}}, "selectit.models names must be unique"),
    ({"serve": {"models": [{"name": "a"}]}, "method": "selectllm"}, "selectllm.model 'smollm2-135m' is not among serve.models"),
    ({"selectit": {"prompts": ["same", "same"]}}, "rating prompts must be distinct"),
    ({"kcenter": {"seeds_file": "/no/such/file"}, "method": "kcenter"}, "kcenter.seeds_file /no/such/file not found"),
])
def test_rules_across_settings_are_one_line_config_errors(bad, needle):
    with pytest.raises(ConfigError) as e:
        parse_config({"input": "x", **bad})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_method_sections_come_from_the_registry(monkeypatch):
    from pydantic import Field

    from selectray.config import config_model
    from selectray.methods import METHODS, Method
    from selectray.settings import Section

    class ShortestSettings(Section):
        """Shortest-first baseline."""

        max_chars: int = Field(100, gt=0, description="Longest row to consider.")

    class Shortest(Method):
        name = "shortest"
        summary = "shortest rows first"
        settings = ShortestSettings

    assert "shortest" not in config_model().model_fields
    monkeypatch.setitem(METHODS, "shortest", Shortest())
    cfg = parse_config({"input": "x", "method": "shortest", "shortest": {"max_chars": 7}})
    assert cfg.method == "shortest" and cfg.shortest.max_chars == 7
    with pytest.raises(ConfigError, match="shortest.max_chars"):
        parse_config({"input": "x", "method": "shortest", "shortest": {"max_chars": 0}})
    monkeypatch.delitem(METHODS, "shortest")
    with pytest.raises(ConfigError, match="unknown method"):
        parse_config({"input": "x", "method": "shortest"})
