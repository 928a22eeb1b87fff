"""`selectray serve`: the Ray Serve rater app alone, until interrupted."""

from __future__ import annotations

import argparse

NAME = "serve"
HELP = "start the Ray Serve rater app (OpenAI-style HTTP API) and block until interrupted"
DESCRIPTION = ("Serve the rater models of a config: POST /v1/completions, /v1/chat/completions, "
               "GET /v1/models, /healthz. Models: `serve.models`, else `selectllm.model`.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML run configuration (its serve/selectllm/ray sections)")
    p.add_argument("--host", help="HTTP host (overrides serve.host)")
    p.add_argument("--port", type=int, help="HTTP port (overrides serve.port)")


def main(args: argparse.Namespace) -> int:
    import time

    from selectray import serve
    from selectray.config import load_config
    from selectray.session import connect

    over = {f"serve.{k}": getattr(args, k) for k in ("host", "port") if getattr(args, k) is not None}
    cfg = load_config(args.config, over)
    gpus = connect(cfg.ray)
    models = cfg.serve.models or [cfg.selectllm.model]
    serve.start(models, cfg.serve, gpus=gpus)
    names = ", ".join(m.name for m in models)
    print(f"serving {names} at http://{cfg.serve.host}:{cfg.serve.port}/v1 (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.stop()
