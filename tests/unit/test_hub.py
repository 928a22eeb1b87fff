"""Models named by hub id, resolved offline through huggingface_hub against a hub cache the
session lays out by hand (HF_HOME and HF_HUB_OFFLINE are set in conftest)."""

import numpy as np
import pytest

from selectray.backends.transformers import TransformersBackend
from selectray.config import parse_config
from selectray.errors import ConfigError
from selectray.models import model_fingerprint, parse_hub_id, pin_models, resolve_model
from selectray.models.hub import HubRef, pin


def test_hub_ids_are_told_apart_from_names_and_paths(tmp_path):
    assert parse_hub_id("Qwen/Qwen2.5-7B-Instruct") == HubRef("Qwen/Qwen2.5-7B-Instruct")
    assert parse_hub_id("org/name@v1.0") == HubRef("org/name", "v1.0")
    assert parse_hub_id("smollm2-135m") is None and parse_hub_id("./rel/path") is None
    folder = tmp_path / "org" / "name"
    folder.mkdir(parents=True)
    assert parse_hub_id(str(folder)) is None  # an existing folder is a path, not an id
    assert HubRef("o/n", "1" * 40).pinned and not HubRef("o/n", "main").pinned


def test_pinning_resolves_branches_to_commits_offline(hub_model):
    repo, first = hub_model["repo"], hub_model["first"]
    assert pin(repo) == f"{repo}@{first}" == pin(f"{repo}@main")
    assert pin(f"{repo}@{hub_model['second']}") == f"{repo}@{hub_model['second']}"  # already a commit
    assert resolve_model(f"{repo}@{first}").kind == "hub"


def test_a_missing_model_is_a_one_line_error_naming_it(hub_model):
    with pytest.raises(ConfigError, match="'acme/no-such-model' is not in the local hub cache"):
        pin("acme/no-such-model")
    with pytest.raises(ConfigError, match="acme/tiny-rater@nope"):
        pin("acme/tiny-rater@nope")


def test_a_moved_branch_is_a_new_model(hub_model):
    repo = hub_model["repo"]
    before = pin(repo)
    try:
        hub_model["move_main"](hub_model["second"])
        after = pin(repo)
    finally:
        hub_model["move_main"](hub_model["first"])
    assert after == f"{repo}@{hub_model['second']}" != before
    assert model_fingerprint(before) != model_fingerprint(after)
    assert model_fingerprint(before) == model_fingerprint(f"{repo}@{hub_model['first']}")


def test_a_pinned_hub_model_loads_the_same_weights_as_its_folder(hub_model, tiny, prompts_for, rating_rows):
    backend = TransformersBackend(f"{hub_model['repo']}@{hub_model['first']}", device="cpu")
    prompts = prompts_for(rating_rows[:2], "paper")
    np.testing.assert_allclose(backend.rating_probs(prompts).probs, tiny.rating_probs(prompts).probs, rtol=1e-5, atol=1e-8)
    assert backend.fingerprint.startswith("hub-") and backend.model_name == f"{hub_model['repo']}@{hub_model['first']}"


def test_pin_models_walks_every_model_entry_but_remote_raters(hub_model):
    repo, first = hub_model["repo"], hub_model["first"]
    cfg = parse_config({"input": "x", "selectit": {"models": [{"name": repo}, {"name": "smollm2-135m"}]},
                        "serve": {"models": [{"name": f"{repo}@main"}]}, "selectllm": {"model": {"name": f"{repo}@main"}}})
    pinned = pin_models(cfg)
    assert [m.name for m in pinned.selectit.models] == [f"{repo}@{first}", "smollm2-135m"]
    assert pinned.serve.models[0].name == pinned.selectllm.model.name == f"{repo}@{first}"
    assert pinned.embed.model == "all-MiniLM-L6-v2" and cfg.selectit.models[0].name == repo  # a copy
    remote = parse_config({"input": "x", "selectllm": {"url": "http://127.0.0.1:1", "model": {"name": "Org/Remote-Rater"}}})
    assert pin_models(remote).selectllm.model.name == "Org/Remote-Rater"  # the server's name, not resolved
