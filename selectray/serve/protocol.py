"""The rater app's request protocol (pure: no Ray, no model): how a request body is read,
the OpenAI-style bodies the app accepts, the OpenAI fields it refuses, and the JSON error
body every bad request gets.

A body is read with limits before pydantic sees it (size, valid UTF-8, nesting depth, no
lone surrogates, no NaN or Infinity), so nothing reaches the tokenizer or the JSON encoder
that they would fail on: bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_DEPTH = 32  # an OpenAI body nests 4 levels (messages[].content[].text); 32 leaves room
MAX_PROMPTS = 256  # prompts in one /v1/completions request
MAX_STOP = 16  # stop strings per request
MAX_STOP_CHARS = 256
# A temperature this small is greedy decoding: sampling would divide the logits into
# infinities and fail.
GREEDY_BELOW = 1e-5
_SURROGATE = re.compile("[\ud800-\udfff]")


class RequestError(Exception):
    """A client error: HTTP status and message for the JSON error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def __reduce__(self):  # crosses process boundaries (replica -> ingress -> caller) intact
        return RequestError, (self.status, self.message, self.kind)

    def body(self) -> dict:
        return error_body(self.status, self.message, self.kind)


def error_body(status: int, message: str, kind: str) -> dict:
    """The app's JSON error body (OpenAI's shape)."""
    return {"error": {"message": message, "type": kind, "code": status}}


def shorten(text: str, limit: int = 80) -> str:
    """Input echoed in an error message, cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(raw: bytes) -> Any:
    """The JSON value of a request body; RequestError(400) for anything but strict JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"the request body is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(400, f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:
        raise RequestError(400, f"the request body is not valid JSON: {shorten(str(e))}") from None
    _check_tree(value)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(value: Any) -> None:
    # Iterative: a deep body must not exhaust the stack here either.
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise RequestError(400, "the request body holds invalid Unicode: a lone surrogate (\\ud800-\\udfff) in a string")
        elif isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise RequestError(400, f"the request body nests deeper than {MAX_DEPTH} levels")
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)


# OpenAI fields this app does not implement: accepted only at their neutral value (the one
# that leaves the result as this app computes it), else a 400 naming the field and why.
_NEUTRAL = {
    "n": (1, "this server returns one choice per prompt"),
    "best_of": (1, "this server returns one choice per prompt"),
    "echo": (False, "this server does not return the prompt"),
    "suffix": ("", "insertion after a suffix is not supported"),
    "logit_bias": ({}, "logit biases are not supported"),
    "stream": (False, "streaming is not supported"),
    "top_p": (1, "nucleus sampling is not supported"),
    "presence_penalty": (0, "penalties are not supported"),
    "frequency_penalty": (0, "penalties are not supported"),
}
_CHAT_NEUTRAL = {
    "logprobs": (False, "chat log-probabilities are not supported; use /v1/completions with logprobs"),
    "top_logprobs": (0, "chat log-probabilities are not supported; use /v1/completions with logprobs"),
}
_COMPLETIONS_ONLY = ("best_of", "echo", "suffix")


def _is_neutral(value: Any, neutral: Any) -> bool:
    if value is None:
        return True
    if isinstance(neutral, bool) or isinstance(value, bool):
        return value is neutral
    if isinstance(neutral, (int, float)):
        return isinstance(value, (int, float)) and value == neutral
    return value == neutral


def _refuse_unimplemented(body: dict, chat: bool) -> dict:
    table = {k: v for k, v in _NEUTRAL.items() if not (chat and k in _COMPLETIONS_ONLY)}
    if chat:
        table.update(_CHAT_NEUTRAL)
    for key, (neutral, why) in table.items():
        if key in body and not _is_neutral(body[key], neutral):
            raise RequestError(400, f"{key}: {shorten(json.dumps(body[key]))} is not supported ({why}); omit it or send {json.dumps(neutral)}")
    return {k: v for k, v in body.items() if k not in table}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    user: str | None = None  # accepted: it does not change the result

    def params(self, logprobs: int | None = None) -> dict:
        """The generation settings of this request, as the model deployment takes them."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        for s in stop or ():
            if not s or len(s) > MAX_STOP_CHARS:
                raise RequestError(400, f"stop: each stop string must have 1 to {MAX_STOP_CHARS} characters")
        if stop is not None and len(stop) > MAX_STOP:
            raise RequestError(400, f"stop: at most {MAX_STOP} stop strings")
        t = self.temperature or 0.0
        return {"max_tokens": self._max_tokens(), "temperature": 0.0 if t < GREEDY_BELOW else t,
                "logprobs": logprobs, "stop": stop or None, "seed": self.seed}

    def _max_tokens(self) -> int:
        return self.max_tokens or 16


class CompletionBody(_Body):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if any(not p for p in prompts):
            raise RequestError(400, "prompt: must not be empty")
        return prompts


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_PROMPTS)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)  # OpenAI's newer name of max_tokens

    def _max_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16

    def chat(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


_NAMES = {"role", "content", "text", "type"}  # nested field names worth showing in an error's place


def parse_body(model: type[_Body], body: Any) -> _Body:
    """Validate a JSON value into a request body; RequestError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    body = _refuse_unimplemented(body, chat=model is ChatBody)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        loc = first["loc"]
        if first["type"] == "extra_forbidden":
            field = shorten(str(loc[-1]))
            if len(loc) == 1:
                known = ", ".join(model.model_fields)
                raise RequestError(400, f"unknown field '{field}'; this server accepts: {known}") from None
            raise RequestError(400, f"{_place(loc[:-1])}: unknown field '{field}'") from None
        raise RequestError(400, f"{_place(loc)}: {first['msg']}") from None


def _place(loc: tuple) -> str:
    """`messages[0].role` from pydantic's error location (leaving out its union-member tags)."""
    where = shorten(str(loc[0])) if loc else "body"
    for x in loc[1:]:
        where += f"[{x}]" if isinstance(x, int) else f".{x}" if x in _NAMES else ""
    return where
