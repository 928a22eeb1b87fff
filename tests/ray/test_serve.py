"""The Ray Serve rater app with the real SmolLM2: HTTP shape, bad requests, handle path."""

import json

import httpx
import pytest

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
LIMIT = 1 << 16  # serve.max_body_bytes of this module's app


@pytest.fixture(scope="module")
def app(rater_app):
    with rater_app([MODEL], max_body_bytes=LIMIT) as (handle, url), httpx.Client(base_url=url, timeout=300) as client:
        yield handle, client


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
    (b'{"model": "smollm2-135m", "prompt": "a \\ud800 b"}', 400, "lone surrogate"),
    (b'{"model": "smollm2-135m", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nests deeper"),
    (b'{"model": "smollm2-135m", "prompt": "x", "max_tokens": 2, "n": 5}', 400, "n: 5 is not supported"),
    (b'{"model": "smollm2-135m", "prompt": "x", "echo": true}', 400, "echo: "),
    (b'{"model": "smollm2-135m", "prompt": "x", "logit_bias": {"1": 5}}', 400, "logit_bias: "),
    (b'{"model": "smollm2-135m", "prompt": "x", "max_tokens": 2, "user": "u1", "n": 1}', 200, ""),
    (b'{"model": "smollm2-135m", "prompt": "x", "max_tokens": 2, "temperature": 1e-300}', 200, ""),
    (b'{"model": "smollm2-135m", "prompt": "x", "temperature": 1, "seed": 18446744073709551616}', 400, "seed"),
    (b'{"model": "smollm2-135m", "prompt": ""}', 400, "prompt"),
    (b'{"model": "smollm2-135m", "prompt": "x", "stop": ["\\udc00"]}', 400, "lone surrogate"),
])
def test_bad_requests_get_json_errors(app, body, status, needle):
    _, client = app
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status >= 400:
        assert needle in r.json()["error"]["message"] and r.json()["error"]["code"] == status
    else:
        assert len(r.json()["choices"]) == 1


def test_oversized_bodies_get_413_and_the_limit_is_the_setting(app):
    _, client = app
    under = b'{"model": "smollm2-135m", "prompt": "' + b"a " * ((LIMIT - 60) // 2) + b'"}'
    over = b'{"model": "smollm2-135m", "prompt": "' + b"a " * (LIMIT // 2) + b'"}'
    assert len(under) <= LIMIT < len(over)
    r = client.post("/v1/completions", content=over, headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(LIMIT) in r.json()["error"]["message"]
    # Without a Content-Length (chunked), the body is cut off as it is read.
    r = client.post("/v1/completions", content=iter([over[:1000], over[1000:]]))
    assert r.status_code == 413 and r.json()["error"]["code"] == 413
    r = client.post("/v1/chat/completions", content=under, headers={"content-type": "application/json"})
    assert r.status_code == 400  # read, then refused for what it holds: not a size problem


def test_chat_rejects_bad_messages_with_json_errors(app):
    _, client = app
    for messages, needle in (([{"role": "tool", "content": "x"}], "messages[0].role"),
                             ([{"role": "user", "content": "\udfff"}], "lone surrogate"),
                             ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0]")):
        body = json.dumps({"model": MODEL, "messages": messages})  # ASCII: the surrogate travels as an escape
        r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_unknown_routes_and_methods_get_json_errors(app):
    _, client = app
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = client.get("/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == 405


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
