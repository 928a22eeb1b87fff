"""The `selectray` command. Usage, config and input errors: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys

import yaml

from selectray.errors import SelectrayError
from selectray.methods import METHODS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _config_help() -> str:
    from selectray.config import config_model

    lines = ["methods:"]
    lines += [f"  {name}: {m.summary}" for name, m in METHODS.items()]
    lines += ["", "config sections (YAML keys; `--set section.key=value` overrides any of them):"]
    for name, field in config_model().model_fields.items():
        lines.append(f"  {name}: {field.description}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="selectray",
        description="Select the most valuable instruction-tuning rows out of a large pool, on Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="run a selection end to end: read -> embed -> k-center -> score/pick -> select -> write",
        description="Run a selection end to end and write selected.parquet, rejected.parquet and the report.",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", required=True, help="YAML run configuration (see examples/demo.yaml)")
    run.add_argument("--input", nargs="+", help="input Parquet/JSONL files or folders (overrides `input`)")
    run.add_argument("--output", help="output directory (overrides `output`)")
    run.add_argument("--method", choices=list(METHODS), help="selection method (overrides `method`)")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, help="number of rows to select (overrides `budget`)")
    size.add_argument("--proportion", type=float, help="share of usable rows to select, 0-1 (overrides `proportion`)")
    run.add_argument("--seed", type=int, help="seed of every random choice (overrides `seed`)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config key, e.g. --set embed.model=hash (value parsed as YAML)")
    run.add_argument("--quiet", action="store_true", help="no per-stage lines")

    res = sub.add_parser(
        "rescore",
        help="recompute SelectIT levels (alpha, normalization) from OUT/scores/ without running any model",
        description="Re-select with other SelectIT settings from the cached rating probabilities of a finished run: "
        "same config and input, new --alpha / --normalization; no model is loaded.",
    )
    res.add_argument("--config", required=True, help="the YAML configuration of the finished run")
    res.add_argument("--alpha", type=float, help="sentence-level uncertainty weight (overrides selectit.alpha)")
    res.add_argument("--normalization", choices=("code", "paper"), help="token-level normalization (overrides selectit.normalization)")
    res.add_argument("--output", help="output directory of the finished run (overrides `output`)")
    res.add_argument("--quiet", action="store_true", help="no per-stage lines")

    srv = sub.add_parser(
        "serve",
        help="start the Ray Serve rater app (OpenAI-style HTTP API) and block until interrupted",
        description="Serve the rater models of a config: POST /v1/completions, /v1/chat/completions, "
        "GET /v1/models, /healthz. Models: `serve.models`, else `selectllm.model`.",
    )
    srv.add_argument("--config", required=True, help="YAML run configuration (its serve/selectllm/ray sections)")
    srv.add_argument("--host", help="HTTP host (overrides serve.host)")
    srv.add_argument("--port", type=int, help="HTTP port (overrides serve.port)")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    for key in ("input", "output", "method", "budget", "proportion", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if args.proportion is not None:
        out["budget"] = None
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SelectrayError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SelectrayError(f"--set {key}: value '{value}' is not valid YAML") from None
    return out


def _serve_forever(cfg) -> None:
    import time

    from selectray import serve
    from selectray.session import connect

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


def _user_error(e: BaseException) -> SelectrayError | None:
    """The SelectrayError behind an exception, also when Ray wrapped it in a task error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, SelectrayError):
            return e
        e = getattr(e, "cause", None) or e.__cause__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from selectray.config import load_config
            from selectray.pipeline import run

            cfg = load_config(args.config, _overrides(args))
            run(cfg, quiet=args.quiet)
        elif args.command == "rescore":
            from selectray.config import load_config
            from selectray.pipeline import run

            over = {f"selectit.{k}": getattr(args, k) for k in ("alpha", "normalization") if getattr(args, k) is not None}
            if args.output:
                over["output"] = args.output
            cfg = load_config(args.config, over)
            scored = [n for n, m in METHODS.items() if any(s.name == "score" for s in m.stages)]
            if cfg.method not in scored:
                raise SelectrayError(f"rescore applies to methods {' and '.join(scored)}, not '{cfg.method}'")
            run(cfg, quiet=args.quiet, rescore=True)
        elif args.command == "serve":
            from selectray.config import load_config

            over = {f"serve.{k}": getattr(args, k) for k in ("host", "port") if getattr(args, k) is not None}
            _serve_forever(load_config(args.config, over))
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("selectray: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001
        user = _user_error(e)
        if user is None:
            raise
        msg = " ".join(str(user).split())
        sys.stderr.write(f"selectray: error: {msg}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
