"""Fuzzing the rater app over HTTP: generated requests (wrong types, huge numbers, NaN, deep
nesting, invalid Unicode and UTF-8, oversized bodies, unknown and unimplemented fields) to
both completion routes of the app serving a tiny random model. Every answer must be a 2xx
in OpenAI's shape or a 4xx with the app's JSON error body, and the app must stay healthy."""

import collections
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow
LIMIT = 1 << 15  # serve.max_body_bytes: oversized bodies stay cheap to send
EXAMPLES = 160  # per route: 320 requests in all


@pytest.fixture(scope="module")
def app(rater_app, tiny_llama_dir):
    with rater_app([tiny_llama_dir], max_body_bytes=LIMIT) as (_, url), httpx.Client(base_url=url, timeout=120) as client:
        yield client, tiny_llama_dir


SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc80", "x\ud83d"])  # lone halves
clean = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
texts = st.one_of(clean, st.text(max_size=8).map(lambda s: s + "\ud800" + s), SURROGATES,
                  st.sampled_from(["", "[", "]", "\x00", "Rate these.", "\U0001f600" * 3]))
HUGE = st.sampled_from([10**30, -(10**30), 2**63, 2**64, 1e308, -1e308, float("nan"), float("inf"), float("-inf")])
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), HUGE, texts,
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))

# Per field: values the app accepts, and values it must refuse (or may, like a huge max_tokens).
VALID = {
    "max_tokens": st.integers(1, 3), "temperature": st.one_of(st.floats(0, 2), st.just(1e-300)),
    "stop": st.one_of(clean, st.lists(clean, min_size=1, max_size=4)), "seed": st.integers(-(2**63), 2**63 - 1),
    "n": st.just(1), "echo": st.just(False), "logit_bias": st.just({}), "stream": st.just(False), "top_p": st.just(1),
    "user": clean, "max_completion_tokens": st.integers(1, 3),
}
INVALID = {
    "max_tokens": st.sampled_from([0, -1, 4096, 4097, "2", 2.5]), "temperature": st.sampled_from([2.5, -0.1, "hot"]),
    "stop": st.one_of(st.lists(texts, min_size=5, max_size=20), st.just([""]), SURROGATES),
    "seed": st.sampled_from([2**63, -(2**63) - 1, 2**70]), "n": st.integers(2, 5), "best_of": st.integers(2, 3),
    "echo": st.just(True), "suffix": clean, "stream": st.just(True), "top_p": st.floats(0, 0.99),
    "logit_bias": st.dictionaries(clean, st.integers(-100, 100), min_size=1, max_size=2),
    "max_completion_tokens": st.integers(-1, 0),
}


def _nest(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def fields(draw, chat: bool, model: str, fuzz: bool) -> dict:
    """A request body: valid fields, or (fuzz) fields any of which may be invalid or junk."""
    def pick(valid, invalid=None):
        if not fuzz:
            return draw(valid)
        return draw(st.one_of(valid, valid, junk, *([invalid] if invalid is not None else [])))

    body: dict = {"model": draw(st.sampled_from([model, model, model, "no-such-model"])) if not fuzz else pick(
        st.just(model), st.sampled_from(["", "no-such-model"]))}
    if chat:
        role = st.sampled_from(["user", "system", "assistant"])
        content = st.one_of(clean, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": clean}),
                                            min_size=1, max_size=2))
        bad = st.fixed_dictionaries({"role": st.sampled_from(["tool", "", "User"]), "content": texts})
        message = st.fixed_dictionaries({"role": role, "content": content})
        body["messages"] = pick(st.lists(message, min_size=1, max_size=3), st.lists(st.one_of(message, bad), max_size=3))
    else:
        body["prompt"] = pick(st.one_of(clean, st.lists(clean, min_size=1, max_size=4)), st.lists(texts, max_size=4))
        if draw(st.booleans()):
            body["logprobs"] = pick(st.integers(0, 5), st.sampled_from([-1, 21, 10**9]))
    keys = sorted(set(VALID) | (set(INVALID) if fuzz else set()))
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        body[key] = pick(VALID.get(key, st.nothing()), INVALID.get(key))
    if fuzz:
        for key, value in draw(st.dictionaries(st.text(max_size=12), junk, max_size=2)).items():
            body.setdefault(key, value)  # unknown fields
    body.setdefault("max_tokens", 2)  # keep generation short unless the body sets it
    return body


@st.composite
def raw_bodies(draw, chat: bool, model: str) -> bytes:
    shape = draw(st.sampled_from(["valid", "valid", "valid", "fuzz", "fuzz", "fuzz", "utf8", "nested", "deep",
                                  "oversized", "cut", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=64))
    body = draw(fields(chat, model, fuzz=shape != "valid"))
    if shape == "nested":
        body = _nest(body, draw(st.integers(1, 40)))
    elif shape == "deep":
        body["prompt" if not chat else "messages"] = _nest("x", draw(st.sampled_from([33, 999, 5000])))
    elif shape == "oversized":
        body["user"] = "y" * draw(st.integers(LIMIT, 2 * LIMIT))
    try:
        # ensure_ascii=True sends a lone surrogate as its escape (with "utf8", as the bytes
        # UTF-8 forbids); NaN and Infinity come out as the non-JSON literals Python writes.
        raw = json.dumps(body, ensure_ascii=shape != "utf8", allow_nan=True).encode("utf-8", "surrogatepass")
    except RecursionError:
        raw = b"[" * 5000 + b"]" * 5000
    if shape == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


def _check(r: httpx.Response, chat: bool) -> None:
    assert 200 <= r.status_code < 300 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()  # every answer is JSON
    if r.status_code >= 400:
        err = body["error"]
        assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
        assert err["code"] == r.status_code
    else:
        assert body["object"] == ("chat.completion" if chat else "text_completion") and body["choices"]
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_generated_requests_get_2xx_or_4xx_json_and_the_app_stays_up(app, route):
    client, model = app
    chat = "chat" in route
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=60_000, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(raw=raw_bodies(chat, model))
    def one(raw: bytes) -> None:
        r = client.post(route, content=raw, headers={"content-type": "application/json"})
        seen.append(r.status_code)
        _check(r, chat)

    one()
    print(route, sorted(collections.Counter(seen).items()))
    assert len(seen) >= EXAMPLES
    assert any(s == 200 for s in seen) and {400, 404, 413} <= set(seen)  # both answers were exercised
    assert client.get("/healthz").json()["status"] == "ok"
    ok = client.post(route, json={"model": model, "max_tokens": 2, **(
        {"messages": [{"role": "user", "content": "Hi"}]} if chat else {"prompt": "Hi"})})
    assert ok.status_code == 200, ok.text
