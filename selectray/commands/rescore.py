"""`selectray rescore`: SelectIT levels again from a finished run's cached probabilities."""

from __future__ import annotations

import argparse

from selectray.errors import SelectrayError

NAME = "rescore"
HELP = "recompute SelectIT levels (alpha, normalization) from OUT/scores/ without running any model"
DESCRIPTION = ("Re-select with other SelectIT settings from the cached rating probabilities of a finished run: "
               "same config and input, new --alpha / --normalization; no model is loaded.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the YAML configuration of the finished run")
    p.add_argument("--alpha", type=float, help="sentence-level uncertainty weight (overrides selectit.alpha)")
    p.add_argument("--normalization", choices=("code", "paper"), help="token-level normalization (overrides selectit.normalization)")
    p.add_argument("--output", help="output directory of the finished run (overrides `output`)")
    p.add_argument("--quiet", action="store_true", help="no per-stage lines")


def main(args: argparse.Namespace) -> int:
    from selectray.config import load_config
    from selectray.methods import METHODS
    from selectray.pipeline import run

    over = {f"selectit.{k}": getattr(args, k) for k in ("alpha", "normalization") if getattr(args, k) is not None}
    if args.output:
        over["output"] = args.output
    cfg = load_config(args.config, over)
    scored = [n for n, m in METHODS.items() if any(s.name == "score" for s in m.stages)]
    if cfg.method not in scored:
        raise SelectrayError(f"rescore applies to methods {' and '.join(scored)}, not '{cfg.method}'")
    run(cfg, quiet=args.quiet, rescore=True)
    return 0
