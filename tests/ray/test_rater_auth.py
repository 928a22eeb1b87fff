"""The rater app with an API key (on loopback, with a tiny random model): 401s with JSON error
bodies, the key kept out of answers and logs, the key required beyond loopback; and the
SelectLLM client reaching the app with the key from `selectllm.api_key_env`."""

import asyncio
import glob
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from selectray.errors import ConfigError
from selectray.methods.selectllm import SelectLLMSettings
from selectray.settings import ServeConfig
from selectray.stages.pick import _client
from selectray.stages.rater_client import HttpClient, pick_groups

pytestmark = pytest.mark.slow
ENV = "SELECTRAY_TEST_RATER_KEY"
KEY = "sr-test-6b1e0c2d9f"


@pytest.fixture(scope="module")
def app(rater_app, tiny_llama_dir):
    os.environ[ENV] = KEY  # read once, where the app is built
    try:
        with rater_app([tiny_llama_dir], api_key_env=ENV) as (_, url):
            os.environ.pop(ENV, None)
            yield url, tiny_llama_dir
    finally:
        os.environ.pop(ENV, None)


def _post(url: str, model: str, headers: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2},
                      headers=headers, timeout=120)


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer wrong-{KEY}"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEY[:-1]}"}])
def test_requests_without_the_key_get_401_json(app, headers):
    url, model = app
    for r in (_post(url, model, headers), httpx.get(f"{url}/v1/models", headers=headers),
              httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers=headers)):
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == 401
        assert KEY not in r.text


def test_the_key_opens_every_route_and_health_needs_none(app):
    url, model = app
    headers = {"Authorization": f"Bearer {KEY}"}
    assert _post(url, model, headers).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers=headers).json()["data"][0]["id"] == model
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_the_key_never_reaches_the_logs(app, ray_local):
    url, model = app
    _post(url, model, {"Authorization": f"Bearer {KEY}"})
    _post(url, model, {"Authorization": f"Bearer not-{KEY}"})
    logs = ray_local._private.worker._global_node.get_logs_dir_path()
    files = [f for f in glob.glob(f"{logs}/**/*", recursive=True) if os.path.isfile(f)]
    assert any("serve" in f for f in files)  # the Serve logs are there to search
    leaked = [f for f in files if KEY.encode() in Path(f).read_bytes()]
    assert not leaked


def test_an_exposed_host_without_a_key_fails_before_anything_is_built(app, monkeypatch, tiny_llama_dir):
    from selectray import serve
    from selectray.serve.application import _proxy_host

    assert _proxy_host() == "127.0.0.1"  # what the builder checks besides `serve.host`: where Serve listens

    monkeypatch.delenv(ENV, raising=False)
    cfg = ServeConfig(api_key_env=ENV)
    with pytest.raises(ConfigError, match=f"would listen on 0.0.0.0, not a loopback address: set an API key in the "
                                          f"environment variable {ENV}"):
        serve.build_app([], cfg, gpus=False, listening_host="0.0.0.0")  # Serve's proxies bound beyond loopback
    with pytest.raises(ConfigError, match=f"serve.host 10.1.2.3 is not a loopback address: .* variable {ENV}"):
        serve.app({"models": [{"name": tiny_llama_dir}], "serve": {"host": "10.1.2.3", "api_key_env": ENV}})
    with pytest.raises(ConfigError, match="rater app args: models"):
        serve.app({"models": []})


def _groups():
    groups = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    texts = {p: (f"Write a poem about the number {p}.", None) for g in groups for p in g}
    return groups, texts


@pytest.mark.parametrize("api,suffix", [("auto", ""), ("completions", "/v1")])
def test_the_client_reaches_the_app_with_the_key_from_its_setting(app, monkeypatch, api, suffix):
    url, model = app
    monkeypatch.setenv("SELECTLLM_TEST_KEY", KEY)
    sl = SelectLLMSettings(url=url + suffix, api=api, api_key_env="SELECTLLM_TEST_KEY", model={"name": model})
    client, started = _client(sl, ServeConfig(), gpus=False)
    assert not started and isinstance(client, HttpClient)
    groups, texts = _groups()
    picked, stats = asyncio.run(pick_groups(client, model, groups, texts, picks=1, max_tokens=4, max_in_flight=2,
                                            retries=1, progress=False))
    # The tiny model has SmolLM2's chat template: auto takes chat, as the app lists it.
    assert stats.api == ("chat" if api == "auto" else "completions")
    assert stats.requests == 2 and stats.failed_requests == 0 and stats.retries == 0
    assert stats.completion_tokens > 0 and len(picked) == 2
    if api == "completions":
        assert all(a.startswith("[") for a in stats.answers)


def test_the_client_with_a_wrong_key_or_model_stops_with_one_line(app, monkeypatch):
    url, model = app
    groups, texts = _groups()
    monkeypatch.setenv("SELECTLLM_TEST_KEY", "wrong-" + KEY)
    sl = SelectLLMSettings(url=url, api_key_env="SELECTLLM_TEST_KEY", model={"name": model})
    with pytest.raises(ConfigError, match="refused the request \\(401\\): set its API key in the environment "
                                          "variable SELECTLLM_TEST_KEY"):
        asyncio.run(pick_groups(_client(sl, ServeConfig(), gpus=False)[0], model, groups, texts, picks=1, max_tokens=4,
                                max_in_flight=2, retries=0, progress=False))
    monkeypatch.setenv("SELECTLLM_TEST_KEY", KEY)
    with pytest.raises(ConfigError, match=f"model 'gpt-nothing' is not served by the rater at {url}/v1; served: {model}$"):
        asyncio.run(pick_groups(_client(sl, ServeConfig(), gpus=False)[0], "gpt-nothing", groups, texts, picks=1,
                                max_tokens=4, max_in_flight=2, retries=0, progress=False))
