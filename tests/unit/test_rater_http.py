"""The SelectLLM client against a foreign OpenAI-compatible server: a small stdlib HTTP server
on 127.0.0.1 that lists its models without our `chat_template` field, requires a key, and
answers 429 with Retry-After, 4xx or a valid answer as a test scripts it."""

import asyncio
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from selectray.errors import ConfigError
from selectray.stages.rater_client import HttpClient, RaterError, pick_groups, retry_after

KEY = "k-3f9a-test-only"
MODEL = "foreign/model"


class Foreign:
    """The server's script and what it saw: `answers[path]` is a list of (status, headers, body)
    consumed in order (the last one repeats); `seen` holds (time, path, Authorization header)."""

    def __init__(self, answers: dict):
        self.answers, self.seen = answers, []
        foreign = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def _answer(self):
                size = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(size)) if size else None
                foreign.seen.append((time.monotonic(), self.path, self.headers.get("authorization"), request))
                if self.headers.get("authorization") != f"Bearer {KEY}":
                    status, headers, body = 401, {}, {"error": {"message": "invalid api key"}}
                else:
                    script = foreign.answers.get(self.path) or [(404, {}, {"error": {"message": "no such route"}})]
                    status, headers, body = script.pop(0) if len(script) > 1 else script[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", "content-length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def posts(self, path: str) -> list:
        return [s for s in self.seen if s[1] == path]


MODELS = {"/v1/models": [(200, {}, {"object": "list", "data": [{"id": MODEL, "object": "model"}, {"id": "other"}]})]}


def completion(text: str) -> tuple:
    return 200, {}, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 2}}


def chat(text: str) -> tuple:
    return 200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 40, "completion_tokens": 3}}


GROUPS = [np.array([10, 11, 12]), np.array([20, 21, 22])]
TEXTS = {p: (f"instruction {p}", None) for g in GROUPS for p in g}


def run(client, retries: int = 3, groups=GROUPS):
    return asyncio.run(pick_groups(client, MODEL, groups, TEXTS, picks=1, max_tokens=8, max_in_flight=1,
                                   retries=retries, progress=False))


def test_429_is_retried_after_its_retry_after_and_auto_takes_completions_from_a_foreign_server():
    answers = {**MODELS, "/v1/chat/completions": [chat("[1]")],
               "/v1/completions": [(429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}), completion("2")]}
    with Foreign(answers) as server:
        picked, stats = run(HttpClient(server.url, 30, api_key=KEY))  # the URL without /v1
        assert not server.posts("/v1/chat/completions")  # completions work: chat is never asked
    assert stats.api == "completions"
    assert [p.tolist() for p in picked] == [[11], [21]]  # "[" + "2" + "]": the second candidate
    assert stats.rate_limited == 1 and stats.retries == 1 and stats.failed_requests == 0 and stats.requests == 2
    first, second = server.posts("/v1/completions")[:2]
    assert second[0] - first[0] >= 1.0  # waited for the Retry-After
    assert all(auth == f"Bearer {KEY}" for _, _, auth, _ in server.seen)
    assert stats.prompt_tokens == 100 and stats.completion_tokens == 4


def test_auto_moves_to_chat_when_the_server_refuses_completions_and_the_v1_url_works_too():
    refused = (404, {}, {"error": {"message": "This is a chat model and not supported in the v1/completions endpoint"}})
    answers = {**MODELS, "/v1/chat/completions": [chat("[3]")], "/v1/completions": [refused]}
    with Foreign(answers) as server:
        picked, stats = run(HttpClient(server.url + "/v1/", 30, api_key=KEY))
        asked = [path for _, path, _, _ in server.seen if path != "/v1/models"]
    # One group at a time: the first asks completions, is refused, asks chat; the second asks chat.
    assert asked == ["/v1/completions", "/v1/chat/completions", "/v1/chat/completions"]
    assert stats.api == "chat" and [p.tolist() for p in picked] == [[12], [22]]
    assert stats.retries == 0 and stats.requests == 2 and stats.failed_requests == 0


def test_a_setting_overrides_auto_and_4xx_answers_are_not_retried():
    answers = {**MODELS, "/v1/chat/completions": [chat("[1]")],
               "/v1/completions": [(400, {}, {"error": {"message": "prompt too long"}})]}
    with Foreign(answers) as server:
        picked, stats = run(HttpClient(server.url, 30, api_key=KEY, api="completions"))
        assert not server.posts("/v1/chat/completions")  # a setting is not second-guessed
        assert len(server.posts("/v1/completions")) == 2
    assert stats.api == "completions" and stats.failed_requests == 2 and stats.retries == 0
    assert stats.status == ["failed_request", "failed_request"] and [len(p) for p in picked] == [0, 0]


def test_auto_keeps_completions_once_one_succeeded():
    answers = {**MODELS, "/v1/chat/completions": [chat("[1]")],
               "/v1/completions": [completion("2"), (400, {}, {"error": {"message": "prompt too long"}})]}
    with Foreign(answers) as server:
        picked, stats = run(HttpClient(server.url, 30, api_key=KEY))
        assert not server.posts("/v1/chat/completions")
    assert stats.api == "completions" and stats.failed_requests == 1 and stats.status == ["ok", "failed_request"]


def test_retries_are_bounded_when_the_server_keeps_answering_429():
    answers = {**MODELS, "/v1/completions": [(429, {"Retry-After": "0"}, {"error": {"message": "slow down"}})]}
    with Foreign(answers) as server:
        _, stats = run(HttpClient(server.url, 30, api_key=KEY, api="completions"), retries=2, groups=GROUPS[:1])
        assert len(server.posts("/v1/completions")) == 3
    assert stats.failed_requests == 1 and stats.rate_limited == 3 and stats.retries == 2


def test_a_long_retry_after_is_capped():
    answers = {**MODELS, "/v1/completions": [(429, {"Retry-After": "3600"}, {"error": {"message": "later"}})]}

    async def post(client):
        try:
            await client.post("completions", {"model": MODEL, "prompt": "x"})
        finally:
            await client.aclose()

    with Foreign(answers) as server, pytest.raises(RaterError) as e:
        asyncio.run(post(HttpClient(server.url, 30, api_key=KEY, max_retry_after_s=0.25)))
    assert e.value.status == 429 and e.value.retry_after == 0.25 and e.value.message == "later"


def test_unknown_model_and_refused_key_are_one_line_errors():
    with Foreign(MODELS) as server:
        with pytest.raises(ConfigError) as e:
            asyncio.run(pick_groups(HttpClient(server.url, 30, api_key=KEY), "missing/model", GROUPS, TEXTS, picks=1,
                                    max_tokens=8, max_in_flight=1, retries=0, progress=False))
        assert str(e.value) == (f"model 'missing/model' is not served by the rater at {server.url}/v1; "
                                f"served: {MODEL}, other")
        with pytest.raises(ConfigError) as e:
            run(HttpClient(server.url, 30, api_key="wrong-" + KEY, key_env="RATER_KEY"))
        assert "401" in str(e.value) and "RATER_KEY" in str(e.value) and KEY not in str(e.value)
        assert "\n" not in str(e.value)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("2") == 2.0 and retry_after("0.5") == 0.5 and retry_after("-3") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("nan") is None
    later = retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 0 < later <= 30
    assert retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0
