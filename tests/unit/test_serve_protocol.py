"""The rater app's request protocol without Ray: strict JSON reading, refused OpenAI fields,
the generation settings a body turns into, and the key rule of the serve section."""

import json

import pytest

from selectray.serve.protocol import (
    GREEDY_BELOW,
    MAX_DEPTH,
    ChatBody,
    CompletionBody,
    RequestError,
    parse_body,
    read_json,
)


def _error(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize("raw,needle", [
    (b'{"prompt": "\\ud800"}', "lone surrogate"),
    (b'{"prompt": ["ok", {"k\\udfff": 1}]}', "lone surrogate"),
    (b"[" * 5000 + b"]" * 5000, "nests deeper"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nests deeper"),
    (b'{"temperature": NaN}', "not valid JSON"),
    (b'{"temperature": -Infinity}', "not valid JSON"),
    (b'{"max_tokens": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
    (b'{"prompt": "x"', "not valid JSON"),
])
def test_read_json_refuses_what_the_model_or_encoder_would_fail_on(raw, needle):
    err = _error(read_json, raw)
    assert err.status == 400 and needle in err.message
    json.dumps(err.body(), ensure_ascii=False).encode("utf-8")  # the error body itself encodes


def test_read_json_keeps_valid_bodies_exactly():
    body = {"model": "m", "prompt": ["é", "日本", "\U0001f600"], "n": 1, "deep": [[[[1]]]]}
    assert read_json(json.dumps(body).encode()) == body
    assert read_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    long = {"model": "m", "prompt": "[" * 5000}  # brackets inside a string are text, not nesting
    assert parse_body(CompletionBody, read_json(json.dumps(long).encode())).prompts() == ["[" * 5000]
    assert parse_body(CompletionBody, {"model": "m", "prompt": ["x" * 10_000] * 256}).prompts()[255] == "x" * 10_000


@pytest.mark.parametrize("field,value", [
    ("n", 5), ("best_of", 3), ("echo", True), ("suffix", "end"), ("logit_bias", {"50256": -100}),
    ("stream", True), ("top_p", 0.5), ("presence_penalty", 1.0), ("frequency_penalty", -0.5), ("n", True),
])
def test_unimplemented_openai_fields_are_a_400_naming_the_field(field, value):
    err = _error(parse_body, CompletionBody, {"model": "m", "prompt": "x", field: value})
    assert err.status == 400 and err.message.startswith(f"{field}: ")


@pytest.mark.parametrize("extra", [
    {"user": "someone"}, {"n": 1}, {"best_of": 1}, {"echo": False}, {"suffix": ""}, {"logit_bias": {}},
    {"stream": False}, {"top_p": 1}, {"top_p": 1.0}, {"presence_penalty": 0}, {"n": None},
])
def test_fields_that_leave_the_result_unchanged_are_accepted(extra):
    req = parse_body(CompletionBody, {"model": "m", "prompt": "x", **extra})
    assert req.prompts() == ["x"]


def test_chat_refuses_completion_only_fields_and_chat_logprobs():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert "unknown field 'echo'" in _error(parse_body, ChatBody, {**base, "echo": False}).message
    assert _error(parse_body, ChatBody, {**base, "logprobs": True}).message.startswith("logprobs: ")
    assert parse_body(ChatBody, {**base, "logprobs": False, "n": 1}).chat() == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body,needle", [
    ({"model": "m", "prompt": "x", "bogus": 1}, "unknown field 'bogus'"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": 10**30}, "max_tokens"),
    ({"model": "m", "prompt": "x", "seed": 2**64}, "seed"),
    ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "prompt": [1, 2]}, "prompt: "),
    ({"model": "m", "prompt": ["x"] * 257}, "prompt"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "name": "a"}]}, "messages[0]: unknown field 'name'"),
    ({"model": 7, "prompt": "x"}, "model"),
])
def test_bad_fields_name_their_place(body, needle):
    model = ChatBody if "messages" in body else CompletionBody
    err = _error(parse_body, model, body)
    assert err.status == 400 and needle in err.message, err.message


def test_params_turn_tiny_temperatures_greedy_and_bound_stop_strings():
    req = parse_body(CompletionBody, {"model": "m", "prompt": "x", "temperature": GREEDY_BELOW / 10, "stop": "]"})
    assert req.params(2) == {"max_tokens": 16, "temperature": 0.0, "logprobs": 2, "stop": ["]"], "seed": None}
    assert parse_body(CompletionBody, {"model": "m", "prompt": "x", "temperature": 0.7}).params()["temperature"] == 0.7
    for stop in ([""], ["x" * 1000], [str(i) for i in range(17)]):
        req = parse_body(CompletionBody, {"model": "m", "prompt": "x", "stop": stop})
        assert _error(req.params).message.startswith("stop: ")
    assert _error(parse_body(CompletionBody, {"model": "m", "prompt": ["a", ""]}).prompts).message == "prompt: must not be empty"
    chat = parse_body(ChatBody, {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
                                 "max_completion_tokens": 3})
    assert chat.params()["max_tokens"] == 3 and chat.chat()[0]["content"] == "a"


def test_an_exposed_host_needs_an_api_key(monkeypatch):
    from selectray.config import ConfigError, parse_config
    from selectray.settings import ServeConfig, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("myhost")
    monkeypatch.delenv("RATER_KEY_FOR_TEST", raising=False)
    with pytest.raises(ConfigError, match="serve.host 0.0.0.0 is not a loopback address: set an API key in the "
                                          "environment variable RATER_KEY_FOR_TEST"):
        parse_config({"input": "x", "serve": {"host": "0.0.0.0", "api_key_env": "RATER_KEY_FOR_TEST"}})
    monkeypatch.setenv("RATER_KEY_FOR_TEST", "sekrit-value")
    cfg = ServeConfig(host="0.0.0.0", api_key_env="RATER_KEY_FOR_TEST")
    assert cfg.has_api_key() and "sekrit-value" not in repr(cfg) + cfg.model_dump_json()
