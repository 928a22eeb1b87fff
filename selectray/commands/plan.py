"""`selectray plan`: counts, cache hits and time estimates of a run, before anything heavy starts."""

from __future__ import annotations

import argparse

NAME = "plan"
HELP = "what a run will cost: usable rows, pairs to score, rater requests, tokens, cache hits, time and GPU-hours"
DESCRIPTION = (
    "Plan a run without running it: one pass over the input (no Ray, no model weights unless --measure) "
    "counts usable rows, the work of every stage, tokens per prompt with each model's tokenizer (on a seeded "
    "sample), and what the output folder already holds; the time and GPU-hours per stage come from throughputs "
    "measured now (--measure), given for a cluster (--throughput), or kept from earlier runs on this hardware."
)
EPILOG = """\
--throughput FILE (YAML or JSON): work per second of the whole cluster, per stage, e.g.
  gpus: true                                  # the cluster has GPUs (for GPU-hours)
  rates:
    embed:all-MiniLM-L6-v2: 20000             # rows/s      (key: embed:<embed.model>)
    kcenter:exact: 5.0e9                      # rows x centers per second
    score:smollm2-135m/vllm:paper: 3000       # (row, prompt) pairs/s (score:<model>/<backend>:<layout>)
    pick:smollm2-135m/vllm:10: 8              # requests/s  (pick:<model>/<backend>:<candidates>)
A bare stage name (embed, score, ...) applies to any key of that stage.
"""


def epilog() -> str:
    return EPILOG


def add_arguments(p: argparse.ArgumentParser) -> None:
    from selectray.methods import METHODS

    p.add_argument("--config", required=True, help="YAML run configuration")
    p.add_argument("--input", nargs="+", help="input Parquet/JSONL files or folders (overrides `input`)")
    p.add_argument("--method", choices=list(METHODS), help="selection method (overrides `method`)")
    p.add_argument("--budget", type=int, help="rows to select (overrides `budget`)")
    p.add_argument("--output", help="output directory whose checkpoints and caches count (overrides `output`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--measure", action="store_true", help="load the models and measure throughputs on the sample")
    p.add_argument("--throughput", metavar="FILE", help="throughputs of a cluster (see below)")


def load_throughput(path: str) -> dict:
    """The --throughput file as a mapping; a one-line error when it is unreadable."""
    from pathlib import Path

    import yaml

    from selectray.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--throughput {path}: {getattr(e, 'strerror', None) or 'not valid YAML/JSON'}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--throughput {path}: expected a mapping of stage keys to work per second")
    rates = data.get("rates", {k: v for k, v in data.items() if k != "gpus"})
    bad = [k for k, v in rates.items() if not isinstance(v, (int, float)) or v <= 0]
    if bad:
        raise ConfigError(f"--throughput {path}: '{bad[0]}' must be a positive number (work per second)")
    return {"gpus": bool(data.get("gpus", False)), "rates": rates}


def _n(v, digits: int = 3) -> str:
    if v is None:
        return "?"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.{digits}g}"
    return f"{int(v):,}"


def _time(s) -> str:
    if s is None:
        return "unknown"
    return f"{s:,.1f} s" if s < 120 else f"{s / 60:,.1f} min" if s < 7200 else f"{s / 3600:,.2f} h"


def describe(plan: dict) -> str:
    """The plan as text for a person."""
    lines = [f"plan: method {plan['config_method']}, output {plan['output']}, hardware {plan['hardware']}",
             f"pool: {plan['input_rows']:,} input rows -> {plan['usable_rows']:,} usable + {plan['rejected_rows']:,} rejected"
             + (f" ({', '.join(f'{k} {v:,}' for k, v in plan['rejected_by_reason'].items())})" if plan["rejected_by_reason"] else "")
             + f"; budget {plan['budget']:,}; tokens counted on a seeded sample of {plan['sample_rows']:,} rows"]
    for name, s in plan["stages"].items():
        if name == "read":
            what = f"{s['rows']:,} rows"
        elif name == "embed":
            what = ("" if s["pool_embedded"] else "up to ") + (
                f"{s['rows']:,} rows with {s['model']}" + ("" if s["pool_embedded"] else " (for the coverage figure)")
                + f": {s['cached_rows']:,} in embeddings/, {s['rows_to_embed']:,} to embed ({s['forward_passes']:,} forward passes)")
        elif name == "kcenter":
            what = f"{s['rows']:,} rows, k = {s['k']:,}" + (" (reused from kcenter/)" if s["reused"] else "")
        elif name == "score":
            parts = []
            for tag, m in s["models"].items():
                tok = (f", ~{_n(m['tokens_per_pair'])} tokens per (row, prompt), {_n(m['tokens_to_score'])} tokens to score"
                       if "tokens_to_score" in m else f" (tokens unknown: {m.get('tokens_error')})")
                parts.append(f"{tag}: {m['pairs']:,} (row, prompt) pairs, {m['cached_pairs']:,} cached, "
                             f"{m['pairs_to_score']:,} to score in {m['forward_passes']:,} forward passes{tok}")
            what = "; ".join(parts)
        elif name == "pick":
            tok = (f", ~{_n(s['prompt_tokens_per_request'])} prompt tokens each ({_n(s['prompt_tokens'])} in all)"
                   if "prompt_tokens" in s else f" (tokens unknown: {s.get('tokens_error')})")
            what = (f"{s['requests']:,} rater requests of {s['candidates_per_request']} candidates{tok}, "
                    f"<= {s['max_completion_tokens_per_request']} completion tokens each "
                    f"(<= {s['forward_passes_max']:,} forward passes)")
        else:
            what = ""
        rate = "" if s["rate"] is None else f" at {_n(s['rate'])} {s['unit']}/s ({s['rate_source']})"
        gpu = f", {s['gpu_hours']:.3f} GPU-h" if s.get("gpu_hours") else ""
        lines.append(f"  {name:8s} {what}\n           -> {_time(s['seconds'])}{rate}{gpu}")
    total = f"total: {_time(plan['total_seconds'])}, {plan['total_gpu_hours']:.3f} GPU-hours"
    if plan["unknown_stages"]:
        total += (f" + unknown for {', '.join(plan['unknown_stages'])} (no throughput yet on this hardware: "
                  "run with --measure, give --throughput, or finish one run here)")
    return "\n".join([*lines, total])


def main(args: argparse.Namespace) -> int:
    import json

    from selectray.commands.run import overrides
    from selectray.config import load_config
    from selectray.plan import make_plan

    over = overrides(args)
    cfg = load_config(args.config, over)
    given = load_throughput(args.throughput) if args.throughput else None
    plan = make_plan(cfg, measure=args.measure, given=given)
    print(json.dumps(plan, indent=2, default=str) if args.json else describe(plan))
    return 0
