"""`selectray generate`: a synthetic instruction pool at scale, with planted bad rows."""

from __future__ import annotations

import argparse

NAME = "generate"
HELP = "write a synthetic instruction pool (sharded Parquet or JSONL) with planted bad rows, for scale tests"
DESCRIPTION = (
    "Write a deterministic synthetic instruction pool: many domains and templates, ~800 characters "
    "a row with a long tail, an `id` column, and a share of bad rows covering every reject reason "
    "the format can carry. The same seed gives byte-identical files. OUT/_generate.json records "
    "the rows, files and planted counts."
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, required=True, help="number of rows (bad ones included)")
    p.add_argument("--out", required=True, help="folder for part-NNNNN.parquet|jsonl and _generate.json")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--bad-share", type=float, default=0.01, help="share of planted bad rows, 0-0.5 (default 0.01)")
    p.add_argument("--format", choices=("parquet", "jsonl"), default="parquet", help="file format (default parquet)")
    p.add_argument("--shard-rows", type=int, default=100_000, help="rows per file (default 100,000)")
    p.add_argument("--threads", type=_positive, help="files written at once (default: one per core)")
    p.add_argument("--overwrite", action="store_true", help="replace a pool generated earlier in --out")


def main(args: argparse.Namespace) -> int:
    import time

    from selectray.generate import MANIFEST, write_pool

    start = time.perf_counter()
    summary = write_pool(args.out, args.rows, seed=args.seed, bad_share=args.bad_share, fmt=args.format,
                         shard_rows=args.shard_rows, overwrite=args.overwrite, threads=args.threads)
    seconds = time.perf_counter() - start
    n, files = summary["rows"], summary["files"]
    print(f"wrote {n:,} rows in {len(files)} file{'s' * (len(files) != 1)} to {args.out} ({args.format}, seed {args.seed}) "
          f"in {seconds:.1f} s, {n / max(seconds, 1e-9):,.0f} rows/s")
    planted = ", ".join(f"{reason} {count:,}" for reason, count in summary["planted"].items())
    print(f"planted bad rows: {summary['planted_total']:,} ({planted})")
    if summary["planted"].get("missing_output"):
        print("  missing_output rows are rejected only by methods that need responses (selectit, hybrid)")
    print(f"summary: {args.out}/{MANIFEST}; input for a run: {args.out}/part-*.{args.format}")
    return 0
