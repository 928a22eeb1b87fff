"""The Ray Serve rater app with the real SmolLM2: HTTP shape, bad requests, handle path."""

import socket

import httpx
import pytest

from selectray import serve as rater_app
from selectray.settings import ModelSpec, ServeConfig

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(ray_local):
    from ray import serve

    cfg = ServeConfig(port=_free_port(), min_replicas=1, max_replicas=1, num_cpus=0.5)
    handle = rater_app.start([ModelSpec(name=MODEL)], cfg, gpus=False)
    # Serve's HTTP options are fixed once Serve runs in a cluster: use the port it really has.
    port = serve.context._get_global_client().http_config.port
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
        yield handle, client
    rater_app.stop()


def test_completion_returns_text_and_logprobs(app):
    _, client = app
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": ["The capital of France is", "1, 2, 3,"],
                                              "max_tokens": 4, "logprobs": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    for choice in body["choices"]:
        lp = choice["logprobs"]
        assert choice["text"] and len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
        assert all(v <= 0 for v in lp["token_logprobs"])
        # Greedy decoding: each generated token is the most likely one of its step.
        for tok, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
            assert len(top) == 3 and abs(max(top.values()) - tok) < 1e-4
    assert body["usage"]["completion_tokens"] <= 8 and body["usage"]["prompt_tokens"] > 0


def test_models_health_and_chat(app):
    _, client = app
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == [MODEL] and models[0]["params"] > 1e8 and models[0]["chat_template"]
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 6,
                                                   "messages": [{"role": "user", "content": "Say hello."}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"model": "nope", "prompt": "x"}', 404, "not found"),
    (b'{"model": "smollm2-135m"}', 400, "prompt"),
    (b'{"model": "smollm2-135m", "prompt": "x", "max_tokens": "many"}', 400, "max_tokens"),
    (b'{"model": "smollm2-135m", "prompt": "x", "temperature": -1}', 400, "temperature"),
    (b'{"model": "smollm2-135m", "prompt": []}', 400, "prompt"),
])
def test_bad_requests_get_json_errors(app, body, status, needle):
    _, client = app
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_prompt_longer_than_context_is_400_naming_the_limit(app):
    _, client = app
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 9000, "max_tokens": 1})
    assert r.status_code == 400
    assert "context length" in r.json()["error"]["message"] and "8192" in r.json()["error"]["message"]


def test_handle_path_matches_http(app):
    handle, client = app
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5}
    via_handle = handle.completions.remote(body).result()
    via_http = client.post("/v1/completions", json=body).json()
    assert via_handle["choices"][0]["text"] == via_http["choices"][0]["text"]
