"""The SelectLLM rater client: one request per candidate group, bounded in flight, with retries.

The rater is the Ray Serve app of `selectray.serve`, reached through its deployment
handle (when this run started it), or any OpenAI-compatible server over HTTP
(`selectllm.url`: `selectray serve`, vLLM's server, Ray Serve LLM, a hosted API; the URL
with or without its `/v1`). Both paths send the same OpenAI-style request bodies.

Route (`selectllm.api`): `chat`, `completions`, or `auto`: our app lists whether a model
has a chat template (`chat_template` in /v1/models) and that decides; with another server
the picks go by completions, and by chat from the first time it refuses completions with a
400/404/405/422 (a chat-only model, as on hosted APIs) until a completion has succeeded.

Retries: lost connections, timeouts, 5xx and 429 answers are retried up to `retries`
times (a 429 after its Retry-After, at most `max_retry_after_s`; the others with
exponential backoff); other 4xx answers are not (the same request would fail again).
Before the first group, /v1/models must list the model: a refused key or an unknown model
is a one-line error. The API key goes only into the Authorization header.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from selectray.errors import ConfigError, SelectrayError
from selectray.prompts import completion_suffix, parse_selection, selection_prompt


class RaterError(Exception):
    """A rater answer that is not a 2xx (status 0: no answer at all)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message, self.retry_after = status, message, retry_after


class HandleClient:
    """Requests through the ingress deployment handle of our app (no HTTP hop)."""

    where = "the rater app"
    key_env = None

    def __init__(self, handle, api: str = "auto"):
        self.handle, self.api = handle, api

    async def post(self, route: str, body: dict) -> dict:
        method = self.handle.chat if route == "chat" else self.handle.completions
        return await method.remote(body)

    async def models(self) -> list[dict]:
        return (await self.handle.list_models.remote())["data"]


class HttpClient:
    """Requests to an OpenAI-compatible server at `url` (ours on another node, vLLM, a hosted API)."""

    def __init__(self, url: str, timeout_s: float, *, api_key: str | None = None, key_env: str | None = None,
                 api: str = "auto", max_retry_after_s: float = 60.0):
        import httpx

        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.where, self.key_env, self.api, self.max_retry_after_s = self.base, key_env, api, max_retry_after_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base, timeout=timeout_s, headers=headers)

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            r = await self.client.request(method, path, json=body)
        except httpx.HTTPError as e:  # no answer: connection refused or lost, timeout
            raise RaterError(0, f"{type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            wait = retry_after(r.headers.get("retry-after"))
            raise RaterError(r.status_code, _error_message(r), None if wait is None else min(wait, self.max_retry_after_s))
        try:
            return r.json()
        except ValueError:
            raise RaterError(502, "the answer is not JSON") from None

    async def post(self, route: str, body: dict) -> dict:
        return await self._request("POST", "/chat/completions" if route == "chat" else "/completions", body)

    async def models(self) -> list[dict]:
        return (await self._request("GET", "/models")).get("data") or []

    async def aclose(self) -> None:
        await self.client.aclose()


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delay-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if not math.isnan(seconds) else None


def _error_message(r) -> str:
    try:
        err = r.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = None
    return str(msg or r.reason_phrase or "error")[:200]


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request (ours raised through a handle too), else None."""
    for err in (exc, getattr(exc, "cause", None)):
        status = getattr(err, "status", None)
        if isinstance(status, int):
            return status
    return None


def _retriable(exc: BaseException) -> bool:
    status = _status(exc)
    return status is None or status == 0 or status >= 500 or status in (408, 409, 429)


@dataclass
class PickStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers (each waited for and retried while retries were left)
    failed_requests: int = 0  # gave up after all retries, or a 4xx: the group falls back
    fallbacks: int = 0  # groups whose answer named no valid candidate
    partial_fallbacks: int = 0  # groups whose answer named fewer than asked
    prompt_tokens: int = 0
    completion_tokens: int = 0
    api: str = ""  # the route the picks went through: "chat" or "completions"
    answers: list[str] = field(default_factory=list)  # the rater's raw answer, per group
    status: list[str] = field(default_factory=list)  # per group: "ok", "unparsable" or "failed_request"


async def _with_retries(fn, retries: int, stats: PickStats, base_delay: float = 0.5):
    for attempt in range(retries + 1):
        try:
            return await fn()
        except Exception as e:  # noqa: BLE001 - a failed replica or request: back off and try again
            if _status(e) == 429:
                stats.rate_limited += 1
            if attempt == retries or not _retriable(e):
                raise
            stats.retries += 1
            wait = getattr(e, "retry_after", None)
            await asyncio.sleep(wait if wait is not None else base_delay * 2**attempt * (1 + random.random()))


class Route:
    """The route the picks take. Settled, except for `auto` against a server that does not
    list `chat_template`: that starts with completions and moves to chat for good when the
    server refuses completions (a chat-only model), until a completion succeeds."""

    def __init__(self, name: str, settled: bool = True):
        self.name, self.settled = name, settled

    def refused(self, name: str, exc: BaseException) -> bool:
        """Whether a failed request should go again by chat (and the route becomes chat)."""
        if self.settled or name != "completions" or _status(exc) not in REFUSED:
            return False
        self.name, self.settled = "chat", True
        return True


REFUSED = (400, 404, 405, 422)  # how servers refuse completions for a chat-only model


async def choose_route(client, model: str, retries: int, stats: PickStats) -> Route:
    """The route for `model` (see the module docstring); a one-line error when the rater
    refuses the key, cannot be reached, or does not serve the model."""
    try:
        served = await _with_retries(client.models, retries, stats)
    except Exception as e:  # noqa: BLE001 - reported as one line
        status = _status(e)
        if status in (401, 403) and client.key_env:
            raise ConfigError(f"the rater at {client.where} refused the request ({status}): set its API key in the "
                              f"environment variable {client.key_env} (selectllm.api_key_env)") from None
        raise SelectrayError(f"cannot list the models of the rater at {client.where}: {getattr(e, 'message', e)}") from None
    info = next((m for m in served if isinstance(m, dict) and m.get("id") == model), None)
    if info is None:
        names = ", ".join(str(m.get("id")) for m in served if isinstance(m, dict)) or "none"
        raise ConfigError(f"model '{model}' is not served by the rater at {client.where}; served: {names}")
    if client.api != "auto":
        if client.api == "chat" and info.get("chat_template") is False:
            raise ConfigError(f"selectllm.api is 'chat' but model '{model}' has no chat template; use 'completions' or 'auto'")
        return Route(client.api)
    if "chat_template" in info:  # our app says
        return Route("chat" if info["chat_template"] else "completions")
    return Route("completions", settled=False)


def _answer(reply: dict, chat: bool) -> str | None:
    """The answer's text; None for a reply without the OpenAI shape."""
    try:
        choice = reply["choices"][0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return text or ""


async def pick_groups(
    client,
    model: str,
    groups: list[np.ndarray],
    texts: dict[int, tuple[str, str | None]],
    *,
    picks: int,
    max_tokens: int,
    max_in_flight: int,
    retries: int,
    progress: bool = True,
) -> tuple[list[np.ndarray], PickStats]:
    """Ask the rater for `picks` candidates of each group; returns the rater's picks per group
    (valid, distinct positions, in the answer's order) and the stats.

    `stats.status[g]` says why a group has fewer picks than it asked for: "unparsable" (the
    answer named fewer valid candidates) or "failed_request" (no answer after all retries).
    """
    stats = PickStats(answers=[""] * len(groups), status=["ok"] * len(groups))
    try:
        route = await choose_route(client, model, retries, stats)
        stats.retries = stats.rate_limited = 0  # the start-up calls are not the groups' requests
        picked = await _rate_all(client, model, groups, texts, stats, route, picks=picks, max_tokens=max_tokens,
                                 max_in_flight=max_in_flight, retries=retries, progress=progress)
        stats.api = route.name
    finally:
        if hasattr(client, "aclose"):
            await client.aclose()
    return picked, stats


async def _rate_all(client, model, groups, texts, stats: PickStats, route: Route, *, picks, max_tokens,
                    max_in_flight, retries, progress) -> list[np.ndarray]:
    gate = asyncio.Semaphore(max_in_flight)
    bar = tqdm(total=len(groups), desc="selectllm: groups rated", unit="group", disable=not progress)

    def request(name: str, prompt: str, want: int) -> dict:
        body: dict = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
        if want == 1:
            # A one-pick answer is complete at its first closing bracket: stopping there saves
            # most of the decoding (small raters go on writing after "[3]").
            body["stop"] = ["]"]
        if name == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt + completion_suffix(want)
        return body

    async def ask(prompt: str, want: int) -> tuple[str, dict | None]:
        name = route.name
        try:
            reply = await _with_retries(lambda: client.post(name, request(name, prompt, want)), retries, stats)
        except Exception as e:  # noqa: BLE001
            if not route.refused(name, e):
                return name, None
            name = "chat"
            try:
                reply = await _with_retries(lambda: client.post(name, request(name, prompt, want)), retries, stats)
            except Exception:  # noqa: BLE001
                return name, None
        route.settled = True
        return name, reply

    async def one(g: int) -> np.ndarray:
        members = groups[g]
        want = min(picks, len(members))
        prompt = selection_prompt([texts[int(p)] for p in members], want)
        async with gate:
            stats.requests += 1
            name, reply = await ask(prompt, want)
        chat = name == "chat"
        text = None if reply is None else _answer(reply, chat)
        failed = text is None
        if failed:
            stats.failed_requests += 1
            text = ""
        else:
            choice = reply["choices"][0]
            text = text if chat else "[" + text
            if want == 1 and choice.get("finish_reason") == "stop":
                text += "]"  # the stop string is not part of the returned text
            usage = reply.get("usage") or {}
            stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        stats.answers[g] = text
        chosen = [int(members[i]) for i in parse_selection(text, len(members), want)]
        if not chosen:
            stats.fallbacks += 1
        elif len(chosen) < want:
            stats.partial_fallbacks += 1
        if len(chosen) < want:
            stats.status[g] = "failed_request" if failed else "unparsable"
        bar.update(1)
        return np.asarray(chosen, dtype=np.int64)

    try:
        return list(await asyncio.gather(*(one(g) for g in range(len(groups)))))
    finally:
        bar.close()
