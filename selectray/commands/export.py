"""`selectray export`: a finished run's selection in the formats fine-tuning tools read."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "write the selection as alpaca, sharegpt or messages records (JSONL or Parquet) for fine-tuning tools"
DESCRIPTION = (
    "Write OUT/selected.parquet for TRL, Axolotl or LLaMA-Factory: alpaca = {instruction, input, output}; "
    "sharegpt = {conversations: [{from: human, value}, {from: gpt, value}]}; messages = {messages: "
    "[{role: user, content}, {role: assistant, content}]}; every record keeps `id` and `rank`. The user turn "
    "is the instruction, then the input after a blank line. Rows without a response are skipped and counted."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="OUT", help="output directory of a finished run")
    from selectray.export import FORMATS

    p.add_argument("--format", required=True, choices=FORMATS, help="record layout")
    p.add_argument("--to", metavar="FILE", help="target .jsonl or .parquet (default OUT/selected.<format>.jsonl)")


def main(args: argparse.Namespace) -> int:
    from selectray.export import export_selection

    path, n, skipped = export_selection(args.output, args.format, args.to)
    extra = f" ({skipped} selected row(s) without a response skipped)" if skipped else ""
    print(f"wrote {n} {args.format} records to {path}{extra}")
    return 0
