"""Ray Serve rater application: one autoscaling deployment per model behind an
OpenAI-style HTTP API (completions with log-probabilities, chat completions).

    selectray serve --config FILE.yaml         # blocks; HTTP on 127.0.0.1:8000 by default
    serve deploy jobs/serve_raters.yaml        # on a running cluster, from a Serve config file

Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /healthz.
Bad requests get a 4xx with a JSON error body, never a 500: 400 (malformed JSON or
fields, OpenAI fields the app does not implement, a prompt longer than the context), 401
(missing or wrong API key, when one is configured), 404 (unknown model), 413 (body larger
than `serve.max_body_bytes`). The same request handling is reachable through a deployment
handle (`handle.completions.remote(body)`), which the pipeline uses when it started the app.

Parts: `protocol` (the request bodies and errors; pure), `deployments` (the model
replicas and the HTTP ingress), `application` (build, start, stop; the builder `app`).
The names below load on first use, so `selectray.serve.protocol` imports without Ray.
"""

_EXPORTS = {
    "APP_NAME": "application", "AppArgs": "application", "app": "application", "build_app": "application",
    "start": "application", "stop": "application", "api_key": "application", "RequestError": "protocol",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selectray.serve' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"selectray.serve.{_EXPORTS[name]}"), name)
