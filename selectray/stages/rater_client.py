"""The SelectLLM rater client: one request per candidate group, bounded in flight, with retries.

The rater is the Ray Serve app of `selectray.serve`, reached through its deployment
handle (when this run started it) or over HTTP (an app already running at a URL).
Both paths send the same OpenAI-style request bodies.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from selectray.prompts import completion_suffix, parse_selection, selection_prompt


class HandleClient:
    """Requests through the ingress deployment handle (no HTTP hop)."""

    def __init__(self, handle):
        self.handle = handle

    async def post(self, route: str, body: dict) -> dict:
        method = self.handle.chat if route == "chat" else self.handle.completions
        return await method.remote(body)

    async def models(self) -> list[dict]:
        return (await self.handle.list_models.remote())["data"]


class HttpClient:
    """Requests to an app already serving at `url` (e.g. `selectray serve` on another node)."""

    def __init__(self, url: str, timeout_s: float):
        import httpx

        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s)

    async def post(self, route: str, body: dict) -> dict:
        path = "/v1/chat/completions" if route == "chat" else "/v1/completions"
        r = await self.client.post(path, json=body)
        r.raise_for_status()
        return r.json()

    async def models(self) -> list[dict]:
        r = await self.client.get("/v1/models")
        r.raise_for_status()
        return r.json()["data"]


@dataclass
class PickStats:
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0  # gave up after all retries: the group falls back
    fallbacks: int = 0  # groups whose answer named no valid candidate
    partial_fallbacks: int = 0  # groups whose answer named fewer than asked
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answers: list[str] = field(default_factory=list)  # the rater's raw answer, per group
    status: list[str] = field(default_factory=list)  # per group: "ok", "unparsable" or "failed_request"


async def _with_retries(fn, retries: int, stats: PickStats, base_delay: float = 0.5):
    for attempt in range(retries + 1):
        try:
            return await fn()
        except Exception:  # noqa: BLE001 - a failed replica or request: back off and try again
            if attempt == retries:
                raise
            stats.retries += 1
            await asyncio.sleep(base_delay * 2**attempt * (1 + random.random()))


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
    chat = any(m.get("id") == model and m.get("chat_template") for m in await client.models())
    gate = asyncio.Semaphore(max_in_flight)
    bar = tqdm(total=len(groups), desc="selectllm: groups rated", unit="group", disable=not progress)

    async def one(g: int) -> np.ndarray:
        members = groups[g]
        want = min(picks, len(members))
        prompt = selection_prompt([texts[int(p)] for p in members], want)
        body: dict = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
        if want == 1:
            # A one-pick answer is complete at its first closing bracket: stopping there saves
            # most of the decoding (small raters go on writing after "[3]").
            body["stop"] = ["]"]
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt + completion_suffix(want)
        async with gate:
            stats.requests += 1
            try:
                reply = await _with_retries(lambda: client.post("chat" if chat else "completions", body), retries, stats)
            except Exception:  # noqa: BLE001
                stats.failed_requests += 1
                reply = None
        if reply is None:
            text = ""
        else:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if chat else "[" + choice["text"]
            if "stop" in body and choice.get("finish_reason") == "stop":
                text += "]"  # the stop string is not part of the returned text
            stats.prompt_tokens += reply["usage"]["prompt_tokens"]
            stats.completion_tokens += reply["usage"]["completion_tokens"]
        stats.answers[g] = text
        chosen = [int(members[i]) for i in parse_selection(text, len(members), want)]
        if not chosen:
            stats.fallbacks += 1
        elif len(chosen) < want:
            stats.partial_fallbacks += 1
        if len(chosen) < want:
            stats.status[g] = "failed_request" if reply is None else "unparsable"
        bar.update(1)
        return np.asarray(chosen, dtype=np.int64)

    try:
        picked = await asyncio.gather(*(one(g) for g in range(len(groups))))
    finally:
        bar.close()
    return list(picked), stats
