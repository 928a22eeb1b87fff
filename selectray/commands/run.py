"""`selectray run`: a selection end to end."""

from __future__ import annotations

import argparse

import yaml

from selectray.errors import SelectrayError

NAME = "run"
HELP = "run a selection end to end: read -> embed -> k-center -> score/pick -> select -> write"
DESCRIPTION = "Run a selection end to end and write selected.parquet, rejected.parquet and the report."


def epilog() -> str:
    from selectray.config import config_model
    from selectray.methods import METHODS

    lines = ["methods:"]
    lines += [f"  {name}: {m.summary}" for name, m in METHODS.items()]
    lines += ["", "config sections (YAML keys; `--set section.key=value` overrides any of them):"]
    for name, field in config_model().model_fields.items():
        lines.append(f"  {name}: {field.description}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from selectray.methods import METHODS

    p.add_argument("--config", required=True, help="YAML run configuration (see examples/demo.yaml)")
    p.add_argument("--input", nargs="+", help="input Parquet/JSONL files or folders (overrides `input`)")
    p.add_argument("--output", help="output directory or URI (overrides `output`)")
    p.add_argument("--method", choices=list(METHODS), help="selection method (overrides `method`)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--budget", type=int, help="number of rows to select (overrides `budget`)")
    size.add_argument("--proportion", type=float, help="share of usable rows to select, 0-1 (overrides `proportion`)")
    p.add_argument("--seed", type=int, help="seed of every random choice (overrides `seed`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set embed.model=hash (value parsed as YAML)")
    p.add_argument("--quiet", action="store_true", help="no per-stage lines")


def overrides(args: argparse.Namespace) -> dict:
    """Config overrides from the command line: the run options and every `--set KEY=VALUE`."""
    out = {}
    for key in ("input", "output", "method", "budget", "proportion", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if getattr(args, "proportion", None) is not None:
        out["budget"] = None
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SelectrayError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SelectrayError(f"--set {key}: value '{value}' is not valid YAML") from None
    return out


def main(args: argparse.Namespace) -> int:
    from selectray.config import load_config
    from selectray.pipeline import run

    run(load_config(args.config, overrides(args)), quiet=args.quiet)
    return 0
