"""Ray Serve rater application: one autoscaling deployment per model behind an
OpenAI-style HTTP API (completions with log-probabilities, chat completions).

    selectray serve --config FILE.yaml         # blocks; HTTP on 127.0.0.1:8000 by default

Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /healthz.
Bad requests get 400 (malformed JSON or fields, prompt longer than the context) or
404 (unknown model), always with a JSON error body; never a 500 for bad input.
The same request handling is reachable through a deployment handle
(`handle.completions.remote(body)`), which the pipeline uses when it started the app.
"""

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

from selectray.backends import make_backend
from selectray.resources import actor_options, use_cpu_threads
from selectray.settings import ModelSpec, ServeConfig

APP_NAME = "selectray-raters"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (n, echo, user, ...)

    model: str
    max_tokens: int = Field(16, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionBody(_Body):
    prompt: str | list[str] = Field(..., min_length=1)
    logprobs: int | None = Field(None, ge=0, le=20)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(..., min_length=1)


class RequestError(Exception):
    """A client error: HTTP status and message for the JSON error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def __reduce__(self):  # crosses process boundaries (replica -> ingress) intact
        return RequestError, (self.status, self.message, self.kind)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.status}}


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
        """One completion; raises RequestError for a prompt that does not fit the context."""
        n = self.backend.count_tokens([prompt])[0]
        limit = self.backend.context_length
        if n + params["max_tokens"] > limit:
            raise RequestError(400, f"prompt is {n} tokens; with max_tokens={params['max_tokens']} it exceeds "
                                    f"the context length {limit} of model '{self.name}'", "context_length_exceeded")
        return await self._generate(prompt, params)

    async def chat_prompt(self, messages: list[dict]) -> str:
        if not self.backend.has_chat_template:
            raise RequestError(400, f"model '{self.name}' has no chat template; use /v1/completions")
        return self.backend.apply_chat_template(messages)

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


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return JSONResponse(RequestError(400, f"{where}: {first.get('msg')}").body(), status_code=400)


class _RaterAPI:
    """HTTP ingress: validates requests and routes them to the model deployments."""

    def __init__(self, models: dict[str, Any]):
        self.models = models  # name -> DeploymentHandle of RaterModel

    def _model(self, name: str):
        if name not in self.models:
            raise RequestError(404, f"model '{name}' not found; served: {', '.join(sorted(self.models))}", "model_not_found")
        return self.models[name]

    async def completions(self, body: dict) -> dict:
        """/v1/completions for a JSON body (dict); raises RequestError for client errors."""
        req = _parse(CompletionBody, body)
        handle = self._model(req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        params = {"max_tokens": req.max_tokens, "temperature": req.temperature, "logprobs": req.logprobs,
                  "stop": [req.stop] if isinstance(req.stop, str) else req.stop, "seed": req.seed}
        results = await asyncio.gather(*(_call(handle.generate, p, params) for p in prompts))
        choices = [{"index": i, "text": r["text"], "logprobs": r["logprobs"], "finish_reason": r["finish_reason"]}
                   for i, r in enumerate(results)]
        return _envelope("text_completion", req.model, choices, results)

    async def chat(self, body: dict) -> dict:
        """/v1/chat/completions: the model's chat template, then a completion."""
        req = _parse(ChatBody, body)
        handle = self._model(req.model)
        prompt = await _call(handle.chat_prompt, [m.model_dump() for m in req.messages])
        params = {"max_tokens": req.max_tokens, "temperature": req.temperature, "logprobs": None,
                  "stop": [req.stop] if isinstance(req.stop, str) else req.stop, "seed": req.seed}
        r = await _call(handle.generate, prompt, params)
        choice = {"index": 0, "message": {"role": "assistant", "content": r["text"]}, "finish_reason": r["finish_reason"]}
        return _envelope("chat.completion", req.model, [choice], [r])

    async def list_models(self) -> dict:
        infos = await asyncio.gather(*(h.info.remote() for h in self.models.values()))
        return {"object": "list", "data": list(infos)}

    @api.post("/v1/completions")
    async def _http_completions(self, request: Request):
        return await _respond(self.completions, request)

    @api.post("/v1/chat/completions")
    async def _http_chat(self, request: Request):
        return await _respond(self.chat, request)

    @api.get("/v1/models")
    async def _http_models(self):
        return await self.list_models()

    @api.get("/healthz")
    async def _http_health(self):
        return {"status": "ok", "models": sorted(self.models)}


# Deployments wrap classes that stay importable under their own names, so replicas import
# this module instead of receiving pickled copies of the classes.
RaterModel = serve.deployment(max_ongoing_requests=64)(_RaterModel)
RaterAPI = serve.deployment(max_ongoing_requests=256)(serve.ingress(api)(_RaterAPI))


def _parse(model: type[BaseModel], body: Any) -> BaseModel:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise RequestError(400, f"{where}: {first['msg']}") from None


async def _call(method, *args):
    """Call a RaterModel method through its handle; client errors raised there come back as RequestError."""
    try:
        return await method.remote(*args)
    except Exception as e:  # noqa: BLE001 - Ray wraps replica exceptions; unwrap the client error
        for err in (getattr(e, "cause", None), e):
            if isinstance(err, RequestError) and hasattr(err, "status"):
                raise RequestError(err.status, err.message, err.kind) from None
        raise


async def _respond(method, request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse(RequestError(400, "the request body is not valid JSON").body(), status_code=400)
    try:
        return JSONResponse(await method(body))
    except RequestError as e:
        return JSONResponse(e.body(), status_code=e.status)


def _envelope(kind: str, model: str, choices: list, results: list[dict]) -> dict:
    prompt = sum(r["prompt_tokens"] for r in results)
    completion = sum(r["completion_tokens"] for r in results)
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()), "model": model,
            "choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion}}


def build_app(models: list[ModelSpec], cfg: ServeConfig, *, gpus: bool):
    """The application: a RaterModel deployment per model, bound into the RaterAPI ingress."""
    handles = {}
    for m in models:
        handles[m.name] = RaterModel.options(
            name=f"rater-{m.name}",
            autoscaling_config={"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                                "target_ongoing_requests": cfg.target_ongoing_requests},
            ray_actor_options=actor_options(m.resources(num_cpus=cfg.num_cpus), gpus),
        ).bind(m.model_dump(), cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.max_replicas)
    return RaterAPI.bind(handles)


# A selection run sends thousands of requests: keep Serve's per-request lines out of the
# console (they stay in Ray's log files, /tmp/ray/session_latest/logs/serve/).
QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}


def start(models: list[ModelSpec], cfg: ServeConfig, *, gpus: bool):
    """Deploy the app on the connected Ray cluster; returns the ingress deployment handle."""
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=QUIET_LOGS)
    return serve.run(build_app(models, cfg, gpus=gpus), name=APP_NAME, route_prefix="/", logging_config=QUIET_LOGS)


def stop() -> None:
    serve.delete(APP_NAME)
