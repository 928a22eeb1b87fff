"""The rater app's Ray Serve deployments: a RaterModel per model (loads its backend once,
batches concurrent prompts) behind the RaterAPI ingress (FastAPI: the OpenAI-style routes,
the body size limit, the API key). What a request body may hold is `protocol.py`'s part.

Every answer is JSON: bad input gets a 4xx with the error body of `protocol.error_body`;
an unexpected failure a 500 with the same shape (and the traceback in the Serve logs).
"""

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException

from selectray.backends import make_backend
from selectray.resources import use_cpu_threads
from selectray.serve.protocol import (
    ChatBody,
    CompletionBody,
    RequestError,
    error_body,
    parse_body,
    read_json,
    shorten,
)
from selectray.settings import ModelSpec

logger = logging.getLogger("ray.serve")


def key_digest(key: str | bytes) -> str:
    """What the ingress keeps of the API key (never the key itself)."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


class _RaterModel:
    """One model's replica: loads the backend once, batches concurrent prompts."""

    def __init__(self, spec: dict, max_batch_size: int = 8, batch_wait_timeout_s: float = 0.01, replicas: int = 1):
        m = ModelSpec.model_validate(spec)
        use_cpu_threads(m.threads, replicas)
        self.backend = make_backend(m.backend, m.name, batch_size=m.batch_size)
        self.name = m.name
        self._generate.set_max_batch_size(max_batch_size)
        self._generate.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def info(self) -> dict:
        b = self.backend
        return {"id": self.name, "object": "model", "owned_by": "selectray", "context_length": b.context_length,
                "params": b.params, "fingerprint": b.fingerprint, "chat_template": b.has_chat_template}

    async def generate(self, prompt: str, params: dict) -> dict:
        """One completion; raises RequestError for a prompt that is empty or does not fit the context."""
        n = self.backend.count_tokens([prompt])[0]
        limit = self.backend.context_length
        if n == 0:
            raise RequestError(400, "prompt: has no tokens")
        if n + params["max_tokens"] > limit:
            raise RequestError(400, f"prompt is {n} tokens; with max_tokens={params['max_tokens']} it exceeds "
                                    f"the context length {limit} of model '{self.name}'", "context_length_exceeded")
        return await self._generate(prompt, params)

    async def chat_prompt(self, messages: list[dict]) -> str:
        if not self.backend.has_chat_template:
            raise RequestError(400, f"model '{self.name}' has no chat template; use /v1/completions")
        try:
            return self.backend.apply_chat_template(messages)
        except Exception as e:  # noqa: BLE001 - a template may refuse a conversation (e.g. roles that do not alternate)
            raise RequestError(400, f"messages: the chat template of model '{self.name}' refused them: {shorten(str(e), 200)}") from None

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _generate(self, prompts: list[str], params: list[dict]) -> list[dict]:
        # Requests in one batch may ask for different settings: one backend call per setting.
        out: list[dict | None] = [None] * len(prompts)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(repr(sorted(p.items())), []).append(i)
        for idx in groups.values():
            p = params[idx[0]]
            done = await asyncio.to_thread(self.backend.complete, [prompts[i] for i in idx], **p)
            for i, c in zip(idx, done):
                out[i] = self._choice(c, p.get("logprobs"))
        return out

    def _choice(self, c, logprobs: int | None) -> dict:
        lp = None
        if logprobs is not None:
            tok = self.backend.tokenizer
            lp = {"tokens": [tok.decode([t]) for t in c.token_ids], "token_logprobs": c.token_logprobs,
                  "top_logprobs": c.top_logprobs if logprobs else None}
        return {"text": c.text, "logprobs": lp, "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}


api = FastAPI(title="selectray raters")


@api.exception_handler(HTTPException)
async def _http_error(_: Request, exc: HTTPException):
    # Unknown routes and methods: the app's JSON error body instead of FastAPI's {"detail": ...}.
    return JSONResponse(error_body(exc.status_code, str(exc.detail), "invalid_request_error"),
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


class _RaterAPI:
    """HTTP ingress: reads and validates requests, checks the API key, routes to the models."""

    def __init__(self, models: dict[str, Any], max_body_bytes: int = 4 << 20, api_key_digest: str | None = None):
        self.models = models  # name -> DeploymentHandle of RaterModel
        self.max_body_bytes = max_body_bytes
        self.api_key_digest = api_key_digest  # None: no key required

    def _model(self, name: str):
        if name not in self.models:
            raise RequestError(404, f"model '{shorten(name)}' not found; served: {', '.join(sorted(self.models))}",
                               "model_not_found")
        return self.models[name]

    async def completions(self, body: Any) -> dict:
        """/v1/completions for a JSON body; raises RequestError for client errors."""
        req = parse_body(CompletionBody, body)
        prompts = req.prompts()
        params = req.params(req.logprobs)
        handle = self._model(req.model)
        results = await asyncio.gather(*(_call(handle.generate, p, params) for p in prompts))
        choices = [{"index": i, "text": r["text"], "logprobs": r["logprobs"], "finish_reason": r["finish_reason"]}
                   for i, r in enumerate(results)]
        return _envelope("text_completion", req.model, choices, results)

    async def chat(self, body: Any) -> dict:
        """/v1/chat/completions: the model's chat template, then a completion."""
        req = parse_body(ChatBody, body)
        params = req.params()
        handle = self._model(req.model)
        prompt = await _call(handle.chat_prompt, req.chat())
        r = await _call(handle.generate, prompt, params)
        choice = {"index": 0, "message": {"role": "assistant", "content": r["text"]}, "finish_reason": r["finish_reason"]}
        return _envelope("chat.completion", req.model, [choice], [r])

    async def list_models(self) -> dict:
        infos = await asyncio.gather(*(h.info.remote() for h in self.models.values()))
        return {"object": "list", "data": list(infos)}

    def _authorize(self, request: Request) -> None:
        if self.api_key_digest is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Starlette decodes headers as latin-1: encoding back gives the bytes the client sent.
        given = key_digest(token.strip().encode("latin-1")) if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given, self.api_key_digest):
            raise RequestError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                               "authentication_error")

    async def _read(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        too_large = RequestError(413, f"the request body is larger than {limit} bytes (serve.max_body_bytes)")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _respond(self, request: Request, handler, with_body: bool = True) -> JSONResponse:
        try:
            self._authorize(request)
            result = await (handler(read_json(await self._read(request))) if with_body else handler())
            return JSONResponse(result)
        except RequestError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            return JSONResponse(e.body(), status_code=e.status, headers=headers)
        except Exception:  # noqa: BLE001 - a server fault, not the client's: logged, answered as JSON
            logger.exception("rater request failed")
            return JSONResponse(error_body(500, "internal error of the rater app (see its Serve logs)", "server_error"),
                                status_code=500)

    @api.post("/v1/completions")
    async def _http_completions(self, request: Request):
        return await self._respond(request, self.completions)

    @api.post("/v1/chat/completions")
    async def _http_chat(self, request: Request):
        return await self._respond(request, self.chat)

    @api.get("/v1/models")
    async def _http_models(self, request: Request):
        return await self._respond(request, self.list_models, with_body=False)

    @api.get("/healthz")
    async def _http_health(self):
        return {"status": "ok", "models": sorted(self.models)}


# Deployments wrap classes that stay importable under their own names, so replicas import
# this module instead of receiving pickled copies of the classes.
RaterModel = serve.deployment(max_ongoing_requests=64)(_RaterModel)
RaterAPI = serve.deployment(max_ongoing_requests=256)(serve.ingress(api)(_RaterAPI))


async def _call(method, *args):
    """Call a RaterModel method through its handle; client errors raised there come back as RequestError."""
    try:
        return await method.remote(*args)
    except Exception as e:  # noqa: BLE001 - Ray wraps replica exceptions; unwrap the client error
        for err in (getattr(e, "cause", None), e):
            if isinstance(err, RequestError) and hasattr(err, "status"):
                raise RequestError(err.status, err.message, err.kind) from None
        raise


def _envelope(kind: str, model: str, choices: list, results: list[dict]) -> dict:
    prompt = sum(r["prompt_tokens"] for r in results)
    completion = sum(r["completion_tokens"] for r in results)
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model,
            "choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion}}
